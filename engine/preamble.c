/* preamble.c - collecting a PROXY protocol header across receives (see preamble.h). */
#include "preamble.h"

#include <errno.h>
#include <string.h>

int preamble_feed(struct preamble *p, const void *data, uint32_t n, struct proxy_info *info,
		  bool *done)
{
	*done = false;
	uint32_t old = p->len;
	uint32_t room = (uint32_t)sizeof(p->buf) - old;
	uint32_t k = n < room ? n : room;
	memcpy(p->buf + old, data, k);
	int rc = proxy_parse(p->buf, old + k, info);
	if (rc < 0)
		return rc;
	if (rc > 0) {
		/* Everything before this chunk was a strict prefix, so the header ends in it. */
		*done = true;
		return rc - (int)old;
	}
	p->len = old + k;
	if (p->len == sizeof(p->buf)) {
		/* proxy_parse promises a verdict within PROXY_MAX bytes; never wait for more. */
		info->error = "PROXY header longer than allowed";
		return -EMSGSIZE;
	}
	return (int)k;
}

void preamble_list_append(struct preamble_list *l, struct preamble *p)
{
	p->next = NULL;
	p->prev = l->tail;
	if (l->tail)
		l->tail->next = p;
	else
		l->head = p;
	l->tail = p;
	l->n++;
}

void preamble_list_remove(struct preamble_list *l, struct preamble *p)
{
	if (p->prev)
		p->prev->next = p->next;
	else
		l->head = p->next;
	if (p->next)
		p->next->prev = p->prev;
	else
		l->tail = p->prev;
	p->prev = p->next = NULL;
	l->n--;
}
