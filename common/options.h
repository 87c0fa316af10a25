/*
 * options.h - a declarative option table for the daemons: one table of
 * options drives command-line parsing, the environment fallback, defaults,
 * validation and --help.
 *
 * Each daemon keeps its own table and configuration struct; the parsers
 * here write into the struct at an offset given by the table, so a table
 * entry says everything about an option in one place.
 */
#ifndef PROVISION_OPTIONS_H
#define PROVISION_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct opt_spec;

/*
 * Parses one value into cfg.  from_env says whether value came from the
 * environment variable (secrets: the value itself) or from the flag (a
 * path).  On failure writes one line naming the option into err.
 */
typedef bool (*opt_parser)(const struct opt_spec *opt, void *cfg, const char *value, bool from_env,
						   char *err, size_t errlen);

struct opt_spec
{
	const char *name; /* the flag, without "--" */
	const char *env;  /* environment fallback, or NULL */
	const char *def;  /* default, or NULL when there is none */
	const char *metavar;
	opt_parser  parse;
	size_t      offset; /* field of the configuration struct */
	long        min;
	long        max;
	const char *help;
};

enum opt_result
{
	OPT_OK,
	OPT_HELP,
	OPT_VERSION,
	OPT_ERROR
};

/* How environment variables are looked up; getenv in a daemon. */
typedef char *(*opt_env_fn)(const char *name);

/*
 * Fills cfg from argv, then the environment, then the defaults (a flag wins
 * over its variable; an empty variable counts as unset).  Options are parsed
 * in table order.  On OPT_ERROR err holds one line.
 */
enum opt_result opt_parse(const struct opt_spec *specs, int nspecs, void *cfg, int argc,
						  char **argv, opt_env_fn env, char *err, size_t errlen);

/* Writes the option part of --help, generated from the table. */
void opt_usage(FILE *out, const struct opt_spec *specs, int nspecs);

/* "--name" for a flag, the variable's name for the environment. */
const char *opt_origin(const struct opt_spec *opt, bool from_env, char *buf, size_t len);

/* Field of cfg that an option's offset names. */
void *opt_field(const struct opt_spec *opt, void *cfg);

/* Generic parsers for table entries. */
bool opt_long(const struct opt_spec *opt, void *cfg, const char *value, bool from_env, char *err,
			  size_t errlen); /* long, min..max */
bool opt_duration(const struct opt_spec *opt, void *cfg, const char *value, bool from_env,
				  char *err, size_t errlen); /* long milliseconds, min..max ms */
bool opt_string(const struct opt_spec *opt, void *cfg, const char *value, bool from_env, char *err,
				size_t errlen); /* char *, strdup'ed; the caller frees */

/* Parses "<n>[ms|s|m|min|h]" (seconds without a unit) into milliseconds. */
bool opt_parse_duration(const char *value, long *ms);

/* Parses "host:port" and "[v6]:port" with a port from 1 to 65535. */
bool opt_parse_listen(const char *value, char *host, size_t hostlen, char *port, size_t portlen);

#endif
