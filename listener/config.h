/*
 * config.h - the listener's options: one table drives command-line parsing,
 * the environment fallback, defaults, validation and --help.
 */
#ifndef PROVISION_CONFIG_H
#define PROVISION_CONFIG_H

#include "log.h"
#include "verify.h"

#include <stdio.h>

struct config
{
	char            listen_host[256]; /* without brackets for IPv6 */
	char            listen_port[8];
	char           *database; /* conninfo or URI; "" means libpq defaults */
	struct secrets  secrets;
	char           *secret_file;        /* NULL: the secrets came from the environment */
	unsigned int    schemes;            /* SCHEMES_* accepted for callbacks */
	struct secrets  stripe_secrets;     /* wiped once the HTTP side has its copy */
	bool            stripe_enabled;     /* a Stripe secret: POST /webhooks/stripe exists */
	char           *stripe_secret_file; /* NULL: none, or from the environment */
	long            max_body;           /* bytes */
	long            tolerance;          /* seconds */
	long            pool;
	long            threads;
	enum log_format log_format;
	long            max_connections;
	long            max_connections_per_ip; /* 0: no limit */
	long            idle_timeout_ms;
	long            request_timeout_ms;
	long            statement_timeout_ms;
	long            pool_wait_ms;
	long            shutdown_timeout_ms;
	bool            prepared_statements; /* false: unnamed statements only */
};

enum config_result
{
	CONFIG_OK,
	CONFIG_HELP,
	CONFIG_VERSION,
	CONFIG_ERROR
};

/* How environment variables are looked up; getenv in the daemon. */
typedef char *(*config_env_fn)(const char *name);

/*
 * Fills cfg from argv, then the environment, then defaults (flags win).
 * On CONFIG_ERROR err holds one line naming the option and the problem.
 * The caller releases cfg with config_free whatever the result.
 */
enum config_result config_parse(struct config *cfg, int argc, char **argv, config_env_fn env,
								char *err, size_t errlen);

void config_free(struct config *cfg);

/*
 * Reads and parses a secret file (the rules of secrets_parse).  On failure
 * err holds one line naming the file and, for a bad secret, its line.
 */
bool config_read_secret_file(const char *path, enum secret_form form, struct secrets *out,
							 char *err, size_t errlen);

/* Writes --help text, generated from the option table. */
void config_usage(FILE *out);

/*
 * Parses a --schemes list ("standard,github", spaces around the commas
 * allowed) into SCHEMES_* bits; false on an empty list or entry or an
 * unknown name.
 */
bool config_parse_schemes(const char *value, unsigned int *schemes);

#endif
