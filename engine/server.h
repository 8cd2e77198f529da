/* server.h - the process around the loops: listeners, worker threads, signals, drain. */
#ifndef ECHOD_SERVER_H
#define ECHOD_SERVER_H

#include "config.h"

/* Runs echod until SIGTERM/SIGINT (a second one cuts the drain short); HUP, USR1 (a stats
 * line), USR2, ALRM and PROF are logged and survived. Returns the process exit status. Errors
 * that stop it from starting are printed as one line on stderr. */
int server_run(const struct echod_config *cfg);
/* Prints each compiled-in backend, whether it initialises here, and its limits. */
int server_list_backends(FILE *out);

#endif
