/*
 * config.c - the option table and everything it drives.
 */
#include "config.h"

#include "options.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECRET_FILE_MAX 65536

/* The listener's own parsers; numbers and strings use options.c's. */
static bool parse_listen(const struct opt_spec *, void *, const char *, bool, char *, size_t);
static bool parse_database(const struct opt_spec *, void *, const char *, bool, char *, size_t);
static bool parse_secret(const struct opt_spec *, void *, const char *, bool, char *, size_t);
static bool parse_prepared(const struct opt_spec *, void *, const char *, bool, char *, size_t);
static bool parse_stripe_secret(const struct opt_spec *, void *, const char *, bool, char *,
								size_t);
static bool parse_schemes(const struct opt_spec *, void *, const char *, bool, char *, size_t);

#define F(field) offsetof(struct config, field)

static const struct opt_spec options[] = {
	{"listen", "PROVISION_LISTEN", "127.0.0.1:8080", "ADDR:PORT", parse_listen, 0, 0, 0,
	 "address to serve on: 127.0.0.1:8080, [::1]:8080, 0.0.0.0:8080, localhost:8080"},
	{"database", "PROVISION_DATABASE_URL", "", "CONNINFO", parse_database, 0, 0, 0,
	 "libpq connection string or URI (empty: PGHOST, PGPORT, ... as libpq does)"},
	{"secret-file", "PROVISION_WEBHOOK_SECRET", NULL, "PATH", parse_secret, 0, 0, 0,
	 "file holding the webhook secrets, one per line (whsec_ prefix: base64), each at least "
	 "16 bytes, without surrounding whitespace; the environment variable holds the secrets "
	 "themselves"},
	{"schemes", "PROVISION_SCHEMES", "standard,github", "LIST", parse_schemes, 0, 0, 0,
	 "callback signature schemes accepted, comma-separated: standard (Standard Webhooks), "
	 "github (X-Hub-Signature-256, which signs no timestamp or delivery id)"},
	{"stripe-secret-file", "PROVISION_STRIPE_WEBHOOK_SECRET", NULL, "PATH", parse_stripe_secret, 0,
	 0, 0,
	 "file holding the Stripe webhook signing secrets (whsec_...), one per line, used as given; "
	 "POST /webhooks/stripe answers 404 without one; the environment variable holds the "
	 "secrets themselves"},
	{"max-body", "PROVISION_MAX_BODY", "65536", "BYTES", opt_long, F(max_body), 1,
	 64L * 1024 * 1024, "largest request body accepted (413 above it)"},
	{"tolerance", "PROVISION_TOLERANCE", "300", "SECONDS", opt_long, F(tolerance), 0,
	 7L * 24 * 3600,
	 "how far webhook-timestamp may be from now, either way, 0 to 604800 (a week); a Stripe "
	 "event's t= too"},
	{"pool", "PROVISION_POOL", "10", "N", opt_long, F(pool), 1, 1000, "database connections"},
	{"threads", "PROVISION_THREADS", NULL, "N", opt_long, F(threads), 1, 1000,
	 "worker threads running database calls (default: same as --pool)"},
	{"log-format", "PROVISION_LOG_FORMAT", "text", "text|json", log_format_option, F(log_format), 0,
	 0, "stderr log lines as key=value text or one JSON object per line"},
	{"max-connections", "PROVISION_MAX_CONNECTIONS", "4096", "N", opt_long, F(max_connections), 4,
	 1000000, "concurrent HTTP connections (capped by the open-file limit)"},
	{"max-connections-per-ip", "PROVISION_MAX_CONNECTIONS_PER_IP", "0", "N", opt_long,
	 F(max_connections_per_ip), 0, 1000000,
	 "concurrent HTTP connections from one client address, 0 for no limit (behind a proxy every "
	 "client has the proxy's address)"},
	{"idle-timeout", "PROVISION_IDLE_TIMEOUT", "10s", "DURATION", opt_duration, F(idle_timeout_ms),
	 1000, 3600L * 1000, "close a connection that sends nothing for this long"},
	{"request-timeout", "PROVISION_REQUEST_TIMEOUT", "30s", "DURATION", opt_duration,
	 F(request_timeout_ms), 1000, 3600L * 1000,
	 "longest time from connecting (or from the previous answer) until a whole request has "
	 "arrived; then the connection is closed"},
	{"statement-timeout", "PROVISION_STATEMENT_TIMEOUT", "10s", "DURATION", opt_duration,
	 F(statement_timeout_ms), 1, 3600L * 1000,
	 "statement_timeout set on each database connection (503 when reached)"},
	{"pool-wait", "PROVISION_POOL_WAIT", "5s", "DURATION", opt_duration, F(pool_wait_ms), 0,
	 600L * 1000,
	 "longest wait for a database connection, from when the request is complete (then 503)"},
	{"shutdown-timeout", "PROVISION_SHUTDOWN_TIMEOUT", "30s", "DURATION", opt_duration,
	 F(shutdown_timeout_ms), 0, 3600L * 1000,
	 "on SIGTERM/SIGINT, longest wait for in-flight requests to finish"},
	{"prepared-statements", "PROVISION_PREPARED_STATEMENTS", "auto", "auto|off", parse_prepared, 0,
	 0, 0,
	 "auto: prepare the callback statement on each connection, falling back to unnamed "
	 "statements on a connection where that fails (PgBouncer transaction pooling); off: "
	 "unnamed statements only"},
};

#define NOPTIONS ((int) (sizeof options / sizeof options[0]))

bool
config_parse_schemes(const char *value, unsigned int *schemes)
{
	const char *p = value;

	*schemes = 0;
	for (;;)
	{
		size_t len;

		while (*p == ' ')
			p++;
		len = strcspn(p, ", ");
		if (len == strlen("standard") && strncmp(p, "standard", len) == 0)
			*schemes |= SCHEMES_STANDARD;
		else if (len == strlen("github") && strncmp(p, "github", len) == 0)
			*schemes |= SCHEMES_GITHUB;
		else
			return false;
		p += len;
		while (*p == ' ')
			p++;
		if (*p == '\0')
			return true;
		if (*p++ != ',')
			return false;
	}
}

static bool
parse_listen(const struct opt_spec *opt, void *cfgp, const char *value, bool from_env, char *err,
			 size_t errlen)
{
	struct config *cfg = cfgp;
	char           name[64];

	if (!opt_parse_listen(value, cfg->listen_host, sizeof cfg->listen_host, cfg->listen_port,
						  sizeof cfg->listen_port))
	{
		snprintf(err, errlen,
				 "invalid %s \"%s\": expected HOST:PORT or [IPV6]:PORT with a port from 1 to 65535",
				 opt_origin(opt, from_env, name, sizeof name), value);
		return false;
	}
	return true;
}

static bool
parse_database(const struct opt_spec *opt, void *cfgp, const char *value, bool from_env, char *err,
			   size_t errlen)
{
	struct config *cfg = cfgp;
	(void) opt;
	(void) from_env;
	free(cfg->database);
	cfg->database = strdup(value);
	if (cfg->database == NULL)
	{
		snprintf(err, errlen, "out of memory");
		return false;
	}
	return true;
}

static bool
read_secret_file(const char *path, char *buf, size_t cap, size_t *len, char *err, size_t errlen)
{
	int    fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t used = 0;

	if (fd < 0)
	{
		snprintf(err, errlen, "cannot open secret file %s: %s", path, strerror(errno));
		return false;
	}
	for (;;)
	{
		ssize_t n = read(fd, buf + used, cap - used);

		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			snprintf(err, errlen, "cannot read secret file %s: %s", path, strerror(errno));
			close(fd);
			return false;
		}
		if (n == 0)
			break;
		used += (size_t) n;
		if (used == cap)
		{
			snprintf(err, errlen, "secret file %s is larger than %zu bytes", path, cap - 1);
			close(fd);
			return false;
		}
	}
	close(fd);
	*len = used;
	return true;
}

bool
config_read_secret_file(const char *path, enum secret_form form, struct secrets *out, char *err,
						size_t errlen)
{
	char   msg[200];
	char  *buf = malloc(SECRET_FILE_MAX);
	size_t len;
	bool   ok;

	if (buf == NULL)
	{
		snprintf(err, errlen, "out of memory");
		return false;
	}
	ok = read_secret_file(path, buf, SECRET_FILE_MAX, &len, err, errlen);
	if (ok)
	{
		ok = secrets_parse(buf, len, form, out, msg, sizeof msg);
		if (!ok)
			snprintf(err, errlen, "invalid secret file %s: %s", path, msg);
	}
	OPENSSL_cleanse(buf, SECRET_FILE_MAX);
	free(buf);
	return ok;
}

static bool
parse_secret(const struct opt_spec *opt, void *cfgp, const char *value, bool from_env, char *err,
			 size_t errlen)
{
	struct config *cfg = cfgp;
	char           msg[200];

	if (!from_env)
	{
		free(cfg->secret_file);
		cfg->secret_file = strdup(value);
		if (cfg->secret_file == NULL)
		{
			snprintf(err, errlen, "out of memory");
			return false;
		}
		return config_read_secret_file(value, SECRET_FORM_WEBHOOK, &cfg->secrets, err, errlen);
	}
	if (!secrets_parse(value, strlen(value), SECRET_FORM_WEBHOOK, &cfg->secrets, msg, sizeof msg))
	{
		snprintf(err, errlen, "invalid %s: %s", opt->env, msg);
		return false;
	}
	return true;
}

static bool
parse_stripe_secret(const struct opt_spec *opt, void *cfgp, const char *value, bool from_env,
					char *err, size_t errlen)
{
	struct config *cfg = cfgp;
	char           msg[200];

	if (!from_env)
	{
		free(cfg->stripe_secret_file);
		cfg->stripe_secret_file = strdup(value);
		if (cfg->stripe_secret_file == NULL)
		{
			snprintf(err, errlen, "out of memory");
			return false;
		}
		return config_read_secret_file(value, SECRET_FORM_EXACT, &cfg->stripe_secrets, err, errlen);
	}
	if (!secrets_parse(value, strlen(value), SECRET_FORM_EXACT, &cfg->stripe_secrets, msg,
					   sizeof msg))
	{
		snprintf(err, errlen, "invalid %s: %s", opt->env, msg);
		return false;
	}
	return true;
}

static bool
parse_prepared(const struct opt_spec *opt, void *cfgp, const char *value, bool from_env, char *err,
			   size_t errlen)
{
	struct config *cfg = cfgp;
	char           name[64];

	if (strcmp(value, "auto") == 0)
		cfg->prepared_statements = true;
	else if (strcmp(value, "off") == 0)
		cfg->prepared_statements = false;
	else
	{
		snprintf(err, errlen, "invalid %s \"%s\": expected auto or off",
				 opt_origin(opt, from_env, name, sizeof name), value);
		return false;
	}
	return true;
}

static bool
parse_schemes(const struct opt_spec *opt, void *cfgp, const char *value, bool from_env, char *err,
			  size_t errlen)
{
	struct config *cfg = cfgp;
	char           name[64];

	if (!config_parse_schemes(value, &cfg->schemes))
	{
		snprintf(err, errlen,
				 "invalid %s \"%s\": expected a comma-separated list of standard and github",
				 opt_origin(opt, from_env, name, sizeof name), value);
		return false;
	}
	return true;
}

enum config_result
config_parse(struct config *cfg, int argc, char **argv, config_env_fn env, char *err, size_t errlen)
{
	memset(cfg, 0, sizeof *cfg);
	switch (opt_parse(options, NOPTIONS, cfg, argc, argv, env, err, errlen))
	{
		case OPT_HELP:
			return CONFIG_HELP;
		case OPT_VERSION:
			return CONFIG_VERSION;
		case OPT_ERROR:
			return CONFIG_ERROR;
		case OPT_OK:
			break;
	}

	if (cfg->secrets.count == 0)
	{
		snprintf(err, errlen,
				 "no webhook secret: set PROVISION_WEBHOOK_SECRET or pass --secret-file PATH");
		return CONFIG_ERROR;
	}
	if (cfg->threads == 0)
		cfg->threads = cfg->pool;
	cfg->stripe_enabled = cfg->stripe_secrets.count > 0;
	return CONFIG_OK;
}

void
config_free(struct config *cfg)
{
	free(cfg->database);
	free(cfg->secret_file);
	free(cfg->stripe_secret_file);
	secrets_clear(&cfg->secrets);
	secrets_clear(&cfg->stripe_secrets);
	memset(cfg, 0, sizeof *cfg);
}

void
config_usage(FILE *out)
{
	fprintf(out, "usage: provision-listener [OPTION]...\n"
				 "Receives signed provisioning callbacks over HTTP and applies each one with\n"
				 "provision.handle_callback() in PostgreSQL; with a Stripe secret, Stripe\n"
				 "events too, with provision.handle_stripe_event().\n\n"
				 "Every option may also come from its environment variable; flags win.\n"
				 "Durations take ms, s (the default unit), m or h. SIGHUP re-reads the secret\n"
				 "files; SIGTERM or SIGINT finishes the requests in progress and exits.\n\n");
	opt_usage(out, options, NOPTIONS);
}
