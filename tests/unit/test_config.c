/*
 * test_config.c - option parsing: defaults, the environment fallback, flags
 * winning over it, bad values, and the secret sources.
 */
#include "config.h"
#include "tap.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

static const char *fake_env[16][2];

static char *
lookup(const char *name)
{
	for (int i = 0; i < 16 && fake_env[i][0] != NULL; i++)
		if (strcmp(fake_env[i][0], name) == 0)
			return (char *) fake_env[i][1];
	return NULL;
}

static void
set_env(int i, const char *name, const char *value)
{
	fake_env[i][0] = name;
	fake_env[i][1] = value;
	fake_env[i + 1][0] = NULL;
}

/* Parses a NULL-terminated list of arguments after the program name. */
static enum config_result
parse(struct config *cfg, char *err, size_t errlen, ...)
{
	char   *argv[32] = {(char *) "provision-listener"};
	int     argc = 1;
	va_list ap;
	char   *arg;

	va_start(ap, errlen);
	while ((arg = va_arg(ap, char *)) != NULL && argc < 31)
		argv[argc++] = arg;
	va_end(ap);
	config_free(cfg);
	return config_parse(cfg, argc, argv, lookup, err, errlen);
}

static void
test_defaults(void)
{
	struct config cfg = {0};
	char          err[512];

	set_env(0, "PROVISION_WEBHOOK_SECRET", "s3cret");
	is_int(parse(&cfg, err, sizeof err, NULL), CONFIG_OK, "defaults: parse with only a secret");
	is_str(cfg.listen_host, "127.0.0.1", "defaults: listen host");
	is_str(cfg.listen_port, "8080", "defaults: listen port");
	is_str(cfg.database, "", "defaults: database is libpq's defaults");
	is_int(cfg.max_body, 65536, "defaults: max body");
	is_int(cfg.tolerance, 300, "defaults: tolerance");
	is_int(cfg.pool, 10, "defaults: pool");
	is_int(cfg.threads, 10, "defaults: threads follow the pool");
	is_int(cfg.log_format, LOG_FORMAT_TEXT, "defaults: text log");
	is_int(cfg.max_connections, 4096, "defaults: max connections");
	is_int(cfg.idle_timeout_ms, 10000, "defaults: idle timeout");
	is_int(cfg.request_timeout_ms, 30000, "defaults: request timeout");
	is_int(cfg.statement_timeout_ms, 10000, "defaults: statement timeout");
	is_int(cfg.pool_wait_ms, 5000, "defaults: pool wait");
	ok(cfg.prepared_statements, "defaults: prepared statements auto");
	is_int(cfg.secrets.count, 1, "defaults: secret from the environment");
	ok(cfg.secrets.items[0].len == 6 && memcmp(cfg.secrets.items[0].key, "s3cret", 6) == 0,
	   "defaults: secret bytes are raw");
	is_int(parse(&cfg, err, sizeof err, "--pool", "3", NULL), CONFIG_OK, "pool 3");
	is_int(cfg.threads, 3, "threads default to a changed pool");
	config_free(&cfg);
}

static void
test_precedence(void)
{
	struct config cfg = {0};
	char          err[512];

	set_env(0, "PROVISION_WEBHOOK_SECRET", "s3cret");
	set_env(1, "PROVISION_POOL", "7");
	set_env(2, "PROVISION_LISTEN", "[::1]:9000");
	set_env(3, "PROVISION_LOG_FORMAT", "json");
	set_env(4, "PROVISION_MAX_BODY", "");
	set_env(5, "PROVISION_PREPARED_STATEMENTS", "off");
	is_int(parse(&cfg, err, sizeof err, NULL), CONFIG_OK, "env: parses");
	is_int(cfg.pool, 7, "env: pool from PROVISION_POOL");
	is_str(cfg.listen_host, "::1", "env: bracketed IPv6 host");
	is_str(cfg.listen_port, "9000", "env: port");
	is_int(cfg.log_format, LOG_FORMAT_JSON, "env: json log format");
	is_int(cfg.max_body, 65536, "env: an empty variable counts as unset");
	ok(!cfg.prepared_statements, "env: PROVISION_PREPARED_STATEMENTS=off");

	is_int(parse(&cfg, err, sizeof err, "--pool", "2", "--listen=localhost:8181", "--log-format",
				 "text", "--threads", "5", NULL),
		   CONFIG_OK, "flags: parse");
	is_int(cfg.pool, 2, "flags: --pool beats PROVISION_POOL");
	is_str(cfg.listen_host, "localhost", "flags: --listen=VALUE form");
	is_str(cfg.listen_port, "8181", "flags: port from the flag");
	is_int(cfg.log_format, LOG_FORMAT_TEXT, "flags: --log-format beats the environment");
	is_int(cfg.threads, 5, "flags: threads set apart from the pool");
	ok(!cfg.prepared_statements, "flags: the environment's off stays without the flag");
	is_int(parse(&cfg, err, sizeof err, "--prepared-statements", "auto", NULL), CONFIG_OK,
		   "flags: --prepared-statements auto parses");
	ok(cfg.prepared_statements, "flags: --prepared-statements auto beats the environment");
	set_env(5, "PROVISION_PREPARED_STATEMENTS", "auto");
	is_int(parse(&cfg, err, sizeof err, "--prepared-statements=off", NULL), CONFIG_OK,
		   "flags: --prepared-statements=off parses");
	ok(!cfg.prepared_statements, "flags: --prepared-statements off beats the environment");
	is_int(parse(&cfg, err, sizeof err, "--statement-timeout", "250ms", "--idle-timeout", "2m",
				 "--pool-wait", "0", "--shutdown-timeout", "1h", NULL),
		   CONFIG_OK, "durations parse");
	is_int(cfg.statement_timeout_ms, 250, "durations: ms unit");
	is_int(cfg.idle_timeout_ms, 120000, "durations: m unit");
	is_int(cfg.pool_wait_ms, 0, "durations: bare number is seconds");
	is_int(cfg.shutdown_timeout_ms, 3600000, "durations: h unit, the documented maximum");
	config_free(&cfg);
}

static void
expect_error(const char *what, const char *needle, ...)
{
	struct config      cfg = {0};
	char               err[512];
	char              *argv[16] = {(char *) "provision-listener"};
	int                argc = 1;
	va_list            ap;
	char              *arg;
	enum config_result r;

	va_start(ap, needle);
	while ((arg = va_arg(ap, char *)) != NULL && argc < 15)
		argv[argc++] = arg;
	va_end(ap);
	r = config_parse(&cfg, argc, argv, lookup, err, sizeof err);
	is_int(r, CONFIG_ERROR, "error: %s", what);
	ok(strstr(err, needle) != NULL && strchr(err, '\n') == NULL, "error: %s names %s (%s)", what,
	   needle, err);
	config_free(&cfg);
}

static void
test_errors(void)
{
	set_env(0, "PROVISION_WEBHOOK_SECRET", "s3cret");
	expect_error("bad pool", "--pool", "--pool", "zero", NULL);
	expect_error("pool 0", "--pool", "--pool", "0", NULL);
	expect_error("negative pool", "--pool", "--pool", "-1", NULL);
	expect_error("trailing junk", "--max-body", "--max-body", "10k", NULL);
	expect_error("huge number", "--tolerance", "--tolerance", "99999999999999999999", NULL);
	expect_error("listen without port", "--listen", "--listen", "127.0.0.1", NULL);
	expect_error("listen port 0", "--listen", "--listen", "127.0.0.1:0", NULL);
	expect_error("listen port 65536", "--listen", "--listen", "127.0.0.1:65536", NULL);
	expect_error("listen bare IPv6", "--listen", "--listen", "::1:8080", NULL);
	expect_error("listen empty host", "--listen", "--listen", ":8080", NULL);
	expect_error("bad log format", "--log-format", "--log-format", "xml", NULL);
	expect_error("bad prepared-statements", "--prepared-statements", "--prepared-statements", "on",
				 NULL);
	expect_error("prepared-statements is case-sensitive", "expected auto or off",
				 "--prepared-statements", "AUTO", NULL);
	expect_error("bad duration", "--statement-timeout", "--statement-timeout", "10h", NULL);
	expect_error("unknown duration unit", "--idle-timeout", "--idle-timeout", "1d", NULL);
	expect_error("unknown option", "--nope", "--nope", NULL);
	expect_error("missing value", "--pool", "--pool", NULL);
	expect_error("positional argument", "stray", "stray", NULL);
	expect_error("secret on the command line", "--secret", "--secret", "x", NULL);
	expect_error("unreadable secret file", "/nonexistent/secret", "--secret-file",
				 "/nonexistent/secret", NULL);

	set_env(1, "PROVISION_POOL", "many");
	expect_error("bad environment value", "PROVISION_POOL", NULL);

	set_env(1, "PROVISION_PREPARED_STATEMENTS", "yes");
	expect_error("bad PROVISION_PREPARED_STATEMENTS", "PROVISION_PREPARED_STATEMENTS", NULL);

	set_env(0, "PROVISION_POOL", "4");
	expect_error("missing secret", "PROVISION_WEBHOOK_SECRET", NULL);

	set_env(0, "PROVISION_WEBHOOK_SECRET", "whsec_%%%%");
	expect_error("bad whsec_ secret", "PROVISION_WEBHOOK_SECRET", NULL);
}

static void
test_secret_file(void)
{
	struct config cfg = {0};
	char          err[512];
	char          path[] = "/tmp/provision-test-secret-XXXXXX";
	int           fd = mkstemp(path);
	const char    text[] = "first\r\n\r\nwhsec_c2Vjb25k\n";

	set_env(0, "PROVISION_WEBHOOK_SECRET", "from-env");
	ok(fd >= 0 && write(fd, text, sizeof text - 1) == (ssize_t) (sizeof text - 1),
	   "secret file: written");
	close(fd);
	is_int(parse(&cfg, err, sizeof err, "--secret-file", path, NULL), CONFIG_OK,
		   "secret file: parses");
	is_int(cfg.secrets.count, 2, "secret file: two secrets, file beats the environment");
	ok(cfg.secrets.items[0].len == 5 && memcmp(cfg.secrets.items[0].key, "first", 5) == 0,
	   "secret file: CRLF stripped");
	ok(cfg.secrets.items[1].len == 6 && memcmp(cfg.secrets.items[1].key, "second", 6) == 0,
	   "secret file: whsec_ decoded");

	fd = open(path, O_WRONLY | O_TRUNC);
	ok(fd >= 0 && write(fd, "\n\n", 2) == 2, "secret file: emptied");
	close(fd);
	is_int(parse(&cfg, err, sizeof err, "--secret-file", path, NULL), CONFIG_ERROR,
		   "secret file: only blank lines is an error");
	ok(strstr(err, path) != NULL, "secret file: error names the file (%s)", err);
	unlink(path);
	config_free(&cfg);
}

/*
 * A week at most: a replay inside the tolerance is answered as a duplicate
 * only while its delivery id is kept (provision.history_retention, 30 days
 * by default).
 */
static void
test_tolerance_range(void)
{
	struct config cfg = {0};
	char          err[512];
	char         *text = NULL;
	size_t        len = 0;
	FILE         *out;

	set_env(0, "PROVISION_WEBHOOK_SECRET", "s3cret");
	is_int(parse(&cfg, err, sizeof err, "--tolerance", "604800", NULL), CONFIG_OK,
		   "tolerance: 604800 accepted");
	is_int(cfg.tolerance, 604800, "tolerance: a week");
	is_int(parse(&cfg, err, sizeof err, "--tolerance", "0", NULL), CONFIG_OK,
		   "tolerance: 0 accepted");
	is_int(parse(&cfg, err, sizeof err, "--tolerance", "604801", NULL), CONFIG_ERROR,
		   "tolerance: 604801 refused");
	is_str(err, "invalid --tolerance \"604801\": expected an integer from 0 to 604800",
		   "tolerance: the error names the range");
	set_env(1, "PROVISION_TOLERANCE", "3153600000");
	is_int(parse(&cfg, err, sizeof err, NULL), CONFIG_ERROR,
		   "tolerance: PROVISION_TOLERANCE of 100 years refused");
	is_str(err, "invalid PROVISION_TOLERANCE \"3153600000\": expected an integer from 0 to 604800",
		   "tolerance: the variable's error names the range");
	config_free(&cfg);

	out = open_memstream(&text, &len);
	ok(out != NULL, "tolerance: memory stream opened");
	if (out == NULL)
		return;
	config_usage(out);
	fclose(out);
	ok(strstr(text, "0 to 604800 (a week)") != NULL, "tolerance: --help gives the range");
	free(text);
}

static void
test_help_version(void)
{
	struct config cfg = {0};
	char          err[512];

	set_env(0, "PROVISION_POOL", "4");
	is_int(parse(&cfg, err, sizeof err, "--help", NULL), CONFIG_HELP, "--help needs no secret");
	is_int(parse(&cfg, err, sizeof err, "--version", NULL), CONFIG_VERSION,
		   "--version needs no secret");
	config_free(&cfg);
}

static void
test_help_text(void)
{
	char  *text = NULL;
	size_t len = 0;
	FILE  *out = open_memstream(&text, &len);

	ok(out != NULL, "help: memory stream opened");
	if (out == NULL)
		return;
	config_usage(out);
	fclose(out);
	ok(strstr(text, "--prepared-statements auto|off") != NULL, "help: lists --prepared-statements");
	ok(strstr(text, "[PROVISION_PREPARED_STATEMENTS] default: auto") != NULL,
	   "help: its variable and default");
	free(text);
}

static void
test_listen_forms(void)
{
	char host[64];
	char port[8];

	ok(config_parse_listen("0.0.0.0:8080", host, sizeof host, port, sizeof port) &&
		   strcmp(host, "0.0.0.0") == 0 && strcmp(port, "8080") == 0,
	   "listen: 0.0.0.0:8080");
	ok(config_parse_listen("[::1]:8080", host, sizeof host, port, sizeof port) &&
		   strcmp(host, "::1") == 0,
	   "listen: [::1]:8080");
	ok(config_parse_listen("localhost:1", host, sizeof host, port, sizeof port),
	   "listen: localhost:1");
	ok(!config_parse_listen("[::1]8080", host, sizeof host, port, sizeof port),
	   "listen: missing colon after bracket");
	ok(!config_parse_listen("host:+80", host, sizeof host, port, sizeof port),
	   "listen: signed port");
	ok(!config_parse_listen("[]:80", host, sizeof host, port, sizeof port),
	   "listen: empty brackets");
}

int
main(void)
{
	test_defaults();
	test_precedence();
	test_errors();
	test_tolerance_range();
	test_secret_file();
	test_help_version();
	test_help_text();
	test_listen_forms();
	return done_testing();
}
