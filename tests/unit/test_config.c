/*
 * test_config.c - option parsing: defaults, the environment fallback, flags
 * winning over it, bad values, and the secret sources.
 */
#include "config.h"
#include "options.h"
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

	set_env(0, "PROVISION_WEBHOOK_SECRET", "s3cret-0123456789");
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
	is_int(cfg.max_connections_per_ip, 0, "defaults: no limit per client address");
	is_int(cfg.idle_timeout_ms, 10000, "defaults: idle timeout");
	is_int(cfg.request_timeout_ms, 30000, "defaults: request timeout");
	is_int(cfg.statement_timeout_ms, 10000, "defaults: statement timeout");
	is_int(cfg.pool_wait_ms, 5000, "defaults: pool wait");
	ok(cfg.prepared_statements, "defaults: prepared statements auto");
	is_int(cfg.schemes, SCHEMES_STANDARD | SCHEMES_GITHUB, "defaults: both callback schemes");
	is_int(cfg.secrets.count, 1, "defaults: secret from the environment");
	ok(cfg.secrets.items[0].len == 17 &&
		   memcmp(cfg.secrets.items[0].key, "s3cret-0123456789", 17) == 0,
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

	set_env(0, "PROVISION_WEBHOOK_SECRET", "s3cret-0123456789");
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
	set_env(0, "PROVISION_WEBHOOK_SECRET", "s3cret-0123456789");
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
	expect_error("negative per-address limit", "--max-connections-per-ip",
				 "--max-connections-per-ip", "-1", NULL);
	expect_error("per-address limit not a number", "expected an integer from 0 to 1000000",
				 "--max-connections-per-ip", "ten", NULL);
	expect_error("unknown scheme", "--schemes", "--schemes", "standard,gitlab", NULL);
	expect_error("empty scheme list", "--schemes", "--schemes", "", NULL);
	expect_error("empty scheme entry", "expected a comma-separated list of standard and github",
				 "--schemes", "standard,,github", NULL);
	expect_error("schemes without commas", "--schemes", "--schemes", "standard github", NULL);
	expect_error("schemes are case-sensitive", "--schemes", "--schemes", "Standard", NULL);
	expect_error("unknown duration unit", "--idle-timeout", "--idle-timeout", "1d", NULL);
	expect_error("unknown option", "--nope", "--nope", NULL);
	expect_error("missing value", "--pool", "--pool", NULL);
	expect_error("positional argument", "stray", "stray", NULL);
	expect_error("secret on the command line", "--secret", "--secret", "x", NULL);
	expect_error("unreadable secret file", "/nonexistent/secret", "--secret-file",
				 "/nonexistent/secret", NULL);

	set_env(1, "PROVISION_POOL", "many");
	expect_error("bad environment value", "PROVISION_POOL", NULL);

	set_env(1, "PROVISION_MAX_CONNECTIONS_PER_IP", "1e3");
	expect_error("bad PROVISION_MAX_CONNECTIONS_PER_IP", "PROVISION_MAX_CONNECTIONS_PER_IP", NULL);

	set_env(1, "PROVISION_SCHEMES", "stripe");
	expect_error("bad PROVISION_SCHEMES", "PROVISION_SCHEMES", NULL);

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
	const char    text[] = "first-secret-0123\r\n\r\nwhsec_c2Vjb25kLXNlY3JldC00NTY=\n";

	set_env(0, "PROVISION_WEBHOOK_SECRET", "from-env");
	ok(fd >= 0 && write(fd, text, sizeof text - 1) == (ssize_t) (sizeof text - 1),
	   "secret file: written");
	close(fd);
	is_int(parse(&cfg, err, sizeof err, "--secret-file", path, NULL), CONFIG_OK,
		   "secret file: parses");
	is_int(cfg.secrets.count, 2, "secret file: two secrets, file beats the environment");
	ok(cfg.secrets.items[0].len == 17 &&
		   memcmp(cfg.secrets.items[0].key, "first-secret-0123", 17) == 0,
	   "secret file: CRLF stripped");
	ok(cfg.secrets.items[1].len == 17 &&
		   memcmp(cfg.secrets.items[1].key, "second-secret-456", 17) == 0,
	   "secret file: whsec_ decoded");

	fd = open(path, O_WRONLY | O_TRUNC);
	ok(fd >= 0 && write(fd, "\n\n", 2) == 2, "secret file: emptied");
	close(fd);
	is_int(parse(&cfg, err, sizeof err, "--secret-file", path, NULL), CONFIG_ERROR,
		   "secret file: only blank lines is an error");
	ok(strstr(err, path) != NULL, "secret file: error names the file (%s)", err);

	fd = open(path, O_WRONLY | O_TRUNC);
	ok(fd >= 0 && write(fd, "first-secret-0123\n\n short-secret-with-space\n", 45) == 45,
	   "secret file: a line with a leading space written");
	close(fd);
	is_int(parse(&cfg, err, sizeof err, "--secret-file", path, NULL), CONFIG_ERROR,
		   "secret file: a leading space is an error");
	ok(strstr(err, path) != NULL && strstr(err, "line 3") != NULL &&
		   strstr(err, "whitespace") != NULL && strchr(err, '\n') == NULL,
	   "secret file: one line naming the file, line 3 and the problem (%s)", err);
	ok(strstr(err, "short-secret") == NULL && strstr(err, "first-secret") == NULL,
	   "secret file: no secret in the message");
	is_int(cfg.secrets.count, 0, "secret file: no secret kept after an error");
	unlink(path);

	set_env(0, "PROVISION_WEBHOOK_SECRET", "good-secret-0123456789\nshort-secret");
	is_int(parse(&cfg, err, sizeof err, NULL), CONFIG_ERROR,
		   "environment: a 12-byte secret is an error");
	ok(strstr(err, "PROVISION_WEBHOOK_SECRET") != NULL && strstr(err, "line 2") != NULL &&
		   strstr(err, "shorter than 16 bytes") != NULL && strstr(err, "short-secret") == NULL,
	   "environment: the message names the variable and line 2, not the secret (%s)", err);
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

	set_env(0, "PROVISION_WEBHOOK_SECRET", "s3cret-0123456789");
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
test_schemes(void)
{
	struct config cfg = {0};
	char          err[512];
	unsigned int  bits;

	set_env(0, "PROVISION_WEBHOOK_SECRET", "s3cret-0123456789");
	set_env(1, "PROVISION_SCHEMES", "github");
	is_int(parse(&cfg, err, sizeof err, NULL), CONFIG_OK, "schemes: from PROVISION_SCHEMES");
	is_int(cfg.schemes, SCHEMES_GITHUB, "schemes: github only");
	is_int(parse(&cfg, err, sizeof err, "--schemes", "standard", NULL), CONFIG_OK,
		   "schemes: --schemes standard");
	is_int(cfg.schemes, SCHEMES_STANDARD, "schemes: the flag wins over the environment");
	set_env(2, "PROVISION_MAX_CONNECTIONS_PER_IP", "8");
	is_int(parse(&cfg, err, sizeof err, NULL), CONFIG_OK,
		   "per-address limit: from the environment");
	is_int(cfg.max_connections_per_ip, 8, "per-address limit: PROVISION_MAX_CONNECTIONS_PER_IP");
	is_int(parse(&cfg, err, sizeof err, "--max-connections-per-ip", "2", NULL), CONFIG_OK,
		   "per-address limit: flag");
	is_int(cfg.max_connections_per_ip, 2, "per-address limit: the flag wins");
	config_free(&cfg);

	ok(config_parse_schemes("github , standard", &bits) &&
		   bits == (SCHEMES_GITHUB | SCHEMES_STANDARD),
	   "schemes: spaces around commas, any order");
	ok(config_parse_schemes("standard,standard", &bits) && bits == SCHEMES_STANDARD,
	   "schemes: a repeated name is harmless");
	ok(!config_parse_schemes(",standard", &bits), "schemes: leading comma");
	ok(!config_parse_schemes("standard,", &bits), "schemes: trailing comma");
	ok(!config_parse_schemes(" ", &bits), "schemes: blank");
}

static void
test_stripe_secrets(void)
{
	struct config cfg = {0};
	char          err[512];
	char          path[] = "/tmp/provision-test-stripe-XXXXXX";
	int           fd = mkstemp(path);
	const char    text[] =
		"whsec_5c0Vq1fV9q8Xh7TQ3mLhUo2YpK4rW6sZ\r\nwhsec_rolled0new0secret0ZmFrZQ\n";

	set_env(0, "PROVISION_WEBHOOK_SECRET", "s3cret-0123456789");
	is_int(parse(&cfg, err, sizeof err, NULL), CONFIG_OK, "stripe: none by default");
	ok(cfg.stripe_secrets.count == 0 && cfg.stripe_secret_file == NULL && !cfg.stripe_enabled,
	   "stripe: no Stripe secret, so no Stripe route");

	ok(fd >= 0 && write(fd, text, sizeof text - 1) == (ssize_t) (sizeof text - 1),
	   "stripe: secret file written");
	close(fd);
	is_int(parse(&cfg, err, sizeof err, "--stripe-secret-file", path, NULL), CONFIG_OK,
		   "stripe: --stripe-secret-file parses");
	is_int(cfg.stripe_secrets.count, 2, "stripe: two secrets (Stripe's rolling secrets)");
	ok(cfg.stripe_enabled, "stripe: the route is enabled");
	ok(cfg.stripe_secrets.items[0].len == 38 &&
		   memcmp(cfg.stripe_secrets.items[0].key, "whsec_5c0Vq1fV9q8Xh7TQ3mLhUo2YpK4rW6sZ", 38) ==
			   0,
	   "stripe: the secret is kept as given, whsec_ included, CR dropped");
	is_str(cfg.stripe_secret_file, path, "stripe: the file is remembered for a reload");
	ok(cfg.secrets.count == 1 && cfg.secrets.items[0].len == 17,
	   "stripe: the callback secret is apart");

	fd = open(path, O_WRONLY | O_TRUNC);
	ok(fd >= 0 && write(fd, "whsec_5c0Vq1fV9q8Xh7TQ3mLhUo2YpK4rW6sZ\nwhsec_short\n", 50) == 50,
	   "stripe: a short secret written");
	close(fd);
	is_int(parse(&cfg, err, sizeof err, "--stripe-secret-file", path, NULL), CONFIG_ERROR,
		   "stripe: a secret under 16 bytes is an error");
	ok(strstr(err, path) != NULL && strstr(err, "line 2") != NULL &&
		   strstr(err, "shorter than 16 bytes") != NULL && strstr(err, "decoding") == NULL &&
		   strstr(err, "whsec_short") == NULL,
	   "stripe: the message names the file and line 2, not the secret (%s)", err);
	unlink(path);

	set_env(1, "PROVISION_STRIPE_WEBHOOK_SECRET", "whsec_from_the_environment_0");
	is_int(parse(&cfg, err, sizeof err, NULL), CONFIG_OK, "stripe: from the environment");
	ok(cfg.stripe_secrets.count == 1 && cfg.stripe_secrets.items[0].len == 28 &&
		   cfg.stripe_secret_file == NULL,
	   "stripe: PROVISION_STRIPE_WEBHOOK_SECRET as given");
	set_env(1, "PROVISION_STRIPE_WEBHOOK_SECRET", " whsec_from_the_environment_0");
	is_int(parse(&cfg, err, sizeof err, NULL), CONFIG_ERROR, "stripe: a leading space is an error");
	ok(strstr(err, "PROVISION_STRIPE_WEBHOOK_SECRET") != NULL && strstr(err, "line 1") != NULL,
	   "stripe: the message names the variable and the line (%s)", err);
	set_env(1, "PROVISION_POOL", "1");
	config_free(&cfg);
}

static void
test_listen_forms(void)
{
	char host[64];
	char port[8];

	ok(opt_parse_listen("0.0.0.0:8080", host, sizeof host, port, sizeof port) &&
		   strcmp(host, "0.0.0.0") == 0 && strcmp(port, "8080") == 0,
	   "listen: 0.0.0.0:8080");
	ok(opt_parse_listen("[::1]:8080", host, sizeof host, port, sizeof port) &&
		   strcmp(host, "::1") == 0,
	   "listen: [::1]:8080");
	ok(opt_parse_listen("localhost:1", host, sizeof host, port, sizeof port),
	   "listen: localhost:1");
	ok(!opt_parse_listen("[::1]8080", host, sizeof host, port, sizeof port),
	   "listen: missing colon after bracket");
	ok(!opt_parse_listen("host:+80", host, sizeof host, port, sizeof port), "listen: signed port");
	ok(!opt_parse_listen("[]:80", host, sizeof host, port, sizeof port), "listen: empty brackets");
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
	test_schemes();
	test_stripe_secrets();
	test_listen_forms();
	return done_testing();
}
