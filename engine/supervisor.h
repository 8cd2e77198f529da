/* supervisor.h - the main thread from the workers' start to the last one's exit: signals,
 * the stop and the cut, the USR1 line, the watchdog (engine-internal, for server.c). */
#ifndef ECHOD_SUPERVISOR_H
#define ECHOD_SUPERVISOR_H

#include <signal.h>

#include "sdnotify.h"
#include "worker.h"

/* The main thread's state from the workers' start to the last one's exit. */
struct supervisor {
	const struct echod_config *cfg;
	struct shared *sh;
	struct worker *ws;
	unsigned n;            /* workers started */
	int stop_sig;          /* the TERM/INT that began the stop; -1: a worker failed; 0: running */
	int cut_sig;           /* the second one; 0: none */
	uint64_t stop_ms;      /* when the stop began */
	uint64_t grace_end_ms; /* --drain-grace: when the workers are asked to drain; 0: asked */
	uint64_t deadline_ms;  /* the watchdog's, once stopping */
	/* The service manager (NOTIFY_SOCKET): READY=1 once every worker listens, STATUS= and
	 * WATCHDOG=1 every notify_every_ms while every worker answers, STOPPING=1 at the stop. */
	struct sdnotify *notify;
	const char *backend;
	bool ready_sent;
	uint64_t next_notify_ms;
};

/* The signals echod takes, and the workers' notification: blocked in every thread before any
 * worker starts, and taken only by supervise()'s sigtimedwait. */
void supervisor_signals(sigset_t *set);
const char *supervisor_signal_name(int sig);
/* Begin the drain (sig: the TERM/INT, or -1 when a worker failed on its own). */
void supervisor_begin_stop(struct supervisor *sv, int sig);
/* Until every worker has exited. */
void supervise(struct supervisor *sv);

#endif
