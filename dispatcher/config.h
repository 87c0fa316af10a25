/*
 * config.h - the dispatcher's options: one table (common/options.h) drives
 * command-line parsing, the environment fallback, defaults, validation and
 * --help.  The credentials are read and checked here too, so that bad ones
 * stop the daemon before it does anything.
 */
#ifndef PROVISION_DISPATCHER_CONFIG_H
#define PROVISION_DISPATCHER_CONFIG_H

#include "log.h"

#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>

enum auth_mode
{
	AUTH_NONE,
	AUTH_TOKEN, /* a personal access token or any other bearer token */
	AUTH_APP    /* a GitHub App: JWT, then an installation token */
};

struct config
{
	char           *database; /* conninfo or URI; "" means libpq defaults */
	char           *repo;     /* OWNER/NAME */
	char           *workflow; /* file name or numeric id */
	char           *ref;
	char           *api; /* base URL without a trailing slash */
	char           *ca_file;
	enum auth_mode  auth;
	char           *token;      /* AUTH_TOKEN; wiped on free */
	char           *token_path; /* NULL when the token came from the environment */
	char           *app_id;
	EVP_PKEY       *app_key;
	char           *app_key_path; /* NULL when the key came from the environment */
	char           *installation_id;
	long            batch;
	long            poll_ms;
	long            give_up_ms;
	bool            metrics;
	char            metrics_host[256]; /* without brackets for IPv6 */
	char            metrics_port[8];
	enum log_format log_format;
	long            request_timeout_ms;
	long            statement_timeout_ms;
	long            shutdown_timeout_ms;
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
 * Fills cfg from argv, then the environment, then defaults (flags win), and
 * checks it.  On CONFIG_ERROR err holds one line naming the option and the
 * problem, never a secret.  The caller releases cfg with config_free
 * whatever the result.
 */
enum config_result config_parse(struct config *cfg, int argc, char **argv, config_env_fn env,
								char *err, size_t errlen);

void config_free(struct config *cfg);

/*
 * Overwrites a credential held as a string (a token, a signed JWT) and
 * frees it; NULL is fine.  The caller forgets the pointer.
 */
void config_free_secret(char *secret);

/* Writes --help text, generated from the option table. */
void config_usage(FILE *out);

/*
 * Re-reads the token file or the App key file (SIGHUP).  On success the new
 * credential replaces the old one; otherwise nothing changes and err says
 * why.  Returns false with err empty when the credential came from the
 * environment, which cannot be read again.
 */
bool config_reload_credentials(struct config *cfg, char *err, size_t errlen);

/*
 * Checks a token as read from a file or variable: one line (a trailing LF
 * or CRLF is dropped), visible ASCII only.  Returns a malloc'd copy or
 * NULL with err set.  Pure: no I/O.
 */
char *config_parse_token(const char *buf, size_t len, char *err, size_t errlen);

/*
 * Loads an RSA private key (PKCS#1 or PKCS#8 PEM, unencrypted) of at least
 * 2048 bits.  Returns NULL with err set.  Pure: no I/O.
 */
EVP_PKEY *config_parse_app_key(const char *pem, size_t len, char *err, size_t errlen);

/* OWNER/NAME as GitHub allows them.  Pure. */
bool config_valid_repo(const char *repo);

/* A workflow file name (.yml or .yaml) or a numeric workflow id.  Pure. */
bool config_valid_workflow(const char *workflow);

#endif
