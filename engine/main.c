/* main.c - echod's edge: parse flags, print help/version/backends, run the server. */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "server.h"

int main(int argc, char **argv)
{
	struct echod_config cfg;
	char err[1024]; /* room for a 253-character host and the reason */
	switch (config_parse(&cfg, argc, argv, err, sizeof(err))) {
	case CONFIG_HELP:
		config_usage(stdout);
		return 0;
	case CONFIG_VERSION:
		printf("echod %s\n", ECHOD_VERSION);
		return 0;
	case CONFIG_LIST_BACKENDS:
		return server_list_backends(stdout);
	case CONFIG_ERROR:
		fprintf(stderr, "echod: %s; see 'echod --help'\n", err);
		return EXIT_USAGE;
	case CONFIG_RUN:
		break;
	}
	return server_run(&cfg);
}
