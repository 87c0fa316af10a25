/*
 * test_common_options.c - the shared option table engine (common/): a
 * table drives flags, variables and defaults; durations and listen
 * addresses; --help from the table; and env_wipe, which must leave no
 * byte of a secret in the environment block.
 */
#include "environ.h"
#include "options.h"
#include "tap.h"

#include <stddef.h>
#include <stdlib.h>

struct cfg
{
	long  count;
	long  wait_ms;
	char *name;
};

static const struct opt_spec specs[] = {
	{"count", "T_COUNT", "3", "N", opt_long, offsetof(struct cfg, count), 1, 10, "how many"},
	{"wait", "T_WAIT", "2s", "DURATION", opt_duration, offsetof(struct cfg, wait_ms), 0, 60000,
	 "how long"},
	{"name", "T_NAME", NULL, "NAME", opt_string, offsetof(struct cfg, name), 0, 0, "what"},
};

static enum opt_result
parse(struct cfg *c, const char *const *argv, const char *const *env, char *err)
{
	int argc = 0;

	while (argv[argc] != NULL)
		argc++;
	memset(c, 0, sizeof *c);
	tap_env = env;
	return opt_parse(specs, 3, c, argc, (char **) argv, tap_getenv, err, 256);
}

static void
test_table(void)
{
	struct cfg c;
	char       err[256];

	is_int(parse(&c, (const char *const[]){"p", NULL}, NULL, err), OPT_OK, "defaults");
	is_int(c.count, 3, "default count");
	is_int(c.wait_ms, 2000, "default wait");
	ok(c.name == NULL, "no default name");

	is_int(parse(&c, (const char *const[]){"p", "--count", "5", NULL},
				 (const char *const[]){"T_COUNT=9", "T_WAIT=150ms", "T_NAME=", NULL}, err),
		   OPT_OK, "flag and variables");
	is_int(c.count, 5, "the flag wins");
	is_int(c.wait_ms, 150, "the variable over the default");
	ok(c.name == NULL, "an empty variable counts as unset");

	is_int(parse(&c, (const char *const[]){"p", "--name=x", "--name", "y", NULL}, NULL, err),
		   OPT_OK, "a repeated flag");
	is_str(c.name, "y", "the last one wins");
	free(c.name);

	is_int(
		parse(&c, (const char *const[]){"p", NULL}, (const char *const[]){"T_COUNT=11", NULL}, err),
		OPT_ERROR, "out of range from a variable");
	is_str(err, "invalid T_COUNT \"11\": expected an integer from 1 to 10", "names the variable");
	is_int(parse(&c, (const char *const[]){"p", "--wait", "2d", NULL}, NULL, err), OPT_ERROR,
		   "an unknown unit");
	is_str(err,
		   "invalid --wait \"2d\": expected a duration such as 500ms, 10s, 2m or 1h, from 0ms to "
		   "60s",
		   "names the flag and the range");
	is_int(parse(&c, (const char *const[]){"p", "--wait", "1h", NULL}, NULL, err), OPT_ERROR,
		   "hours, out of range");
	is_int(parse(&c, (const char *const[]){"p", "stray", NULL}, NULL, err), OPT_ERROR,
		   "a stray argument");
	is_str(err, "unexpected argument \"stray\" (see --help)", "says so");
	is_int(parse(&c, (const char *const[]){"p", "-h", NULL}, NULL, err), OPT_HELP, "-h");
}

static void
test_values(void)
{
	long ms;
	char host[64];
	char port[8];

	ok(opt_parse_duration("15", &ms) && ms == 15000, "seconds by default");
	ok(opt_parse_duration("250ms", &ms) && ms == 250, "ms");
	ok(opt_parse_duration("2m", &ms) && ms == 120000, "m");
	ok(opt_parse_duration("2min", &ms) && ms == 120000, "min");
	ok(opt_parse_duration("2h", &ms) && ms == 7200000, "h");
	ok(!opt_parse_duration("-1", &ms), "negative refused");
	ok(!opt_parse_duration("1.5s", &ms), "fractions refused");
	ok(!opt_parse_duration("99999999999999999999", &ms), "overflow refused");

	ok(opt_parse_listen("127.0.0.1:9464", host, sizeof host, port, sizeof port), "v4");
	is_str(host, "127.0.0.1", "v4 host");
	is_str(port, "9464", "port");
	ok(opt_parse_listen("[::1]:80", host, sizeof host, port, sizeof port), "v6 in brackets");
	is_str(host, "::1", "v6 host without brackets");
	ok(!opt_parse_listen("::1:80", host, sizeof host, port, sizeof port), "bare v6 refused");
	ok(!opt_parse_listen("localhost:0", host, sizeof host, port, sizeof port), "port 0 refused");
	ok(!opt_parse_listen("localhost:65536", host, sizeof host, port, sizeof port),
	   "port 65536 refused");
	ok(!opt_parse_listen(":80", host, sizeof host, port, sizeof port), "no host refused");
}

static void
test_usage(void)
{
	char  *text = NULL;
	size_t len = 0;
	FILE  *f = open_memstream(&text, &len);

	opt_usage(f, specs, 3);
	fclose(f);
	ok(strstr(text, "  --count N") != NULL && strstr(text, "[T_COUNT] default: 3") != NULL,
	   "--help shows the flag, the variable and the default");
	ok(strstr(text, "[T_NAME]\n") != NULL, "no default shown when there is none");
	ok(strstr(text, "--help") != NULL && strstr(text, "--version") != NULL, "--help and --version");
	free(text);
}

static void
test_env_wipe(void)
{
	static char entry[] = "T_SECRET=hunter2-hunter2";
	static char twice[] = "T_SECRET=again";
	bool        zeroed = true;

	putenv(entry);
	ok(getenv("T_SECRET") != NULL, "the variable is set");
	env_wipe("T_SECRET");
	ok(getenv("T_SECRET") == NULL, "gone from the environment");
	for (size_t i = 0; i < sizeof entry - 1; i++)
		zeroed = zeroed && entry[i] == '\0';
	ok(zeroed, "every byte of NAME=value overwritten where it was");

	putenv(twice);
	env_wipe("T_SECRET");
	ok(getenv("T_SECRET") == NULL && twice[9] == '\0', "again");
	env_wipe("T_ABSENT");
	ok(getenv("T_ABSENT") == NULL, "an absent variable is fine");
}

int
main(void)
{
	test_table();
	test_values();
	test_usage();
	test_env_wipe();
	return done_testing();
}
