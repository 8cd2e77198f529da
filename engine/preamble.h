/* preamble.h - what a connection holds while its PROXY protocol header is still arriving.
 *
 * The header may come a byte at a time, or with the first echo bytes in the same segment. The
 * preamble collects bytes until proxy_parse() says the header is complete, then tells the
 * caller how many of the last chunk's bytes were header: the rest are the connection's data.
 * It exists only until then (PROXY_MAX bytes per connection, only during the handshake), and
 * preambles are listed oldest first, so the deadline check looks at the head only.
 */
#ifndef ECHOD_PREAMBLE_H
#define ECHOD_PREAMBLE_H

#include <stdbool.h>
#include <stdint.h>

#include "proxy_proto.h"

struct preamble {
	uint8_t buf[PROXY_MAX];
	uint32_t len;
	uint64_t started_ms;
	struct preamble *prev, *next; /* the server's list, oldest first */
	void *owner;                  /* the connection */
};

struct preamble_list {
	struct preamble *head, *tail;
	uint32_t n;
};

/* Feed the next n bytes. Returns how many of them belong to the header (0..n) and sets *done
 * when the header is complete (*info filled); or a negative errno (info->error says why) when
 * no header can start with what arrived. */
int preamble_feed(struct preamble *p, const void *data, uint32_t n, struct proxy_info *info,
		  bool *done);

void preamble_list_append(struct preamble_list *l, struct preamble *p);
void preamble_list_remove(struct preamble_list *l, struct preamble *p);

#endif
