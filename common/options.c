/*
 * options.c - the option table engine and its generic parsers.
 */
#include "options.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define HELP_COLUMN 33

void *
opt_field(const struct opt_spec *opt, void *cfg)
{
	return (char *) cfg + opt->offset;
}

const char *
opt_origin(const struct opt_spec *opt, bool from_env, char *buf, size_t len)
{
	if (from_env)
		snprintf(buf, len, "%s", opt->env);
	else
		snprintf(buf, len, "--%s", opt->name);
	return buf;
}

bool
opt_parse_duration(const char *value, long *ms)
{
	char *end;
	long  n;
	long  scale;

	if (value[0] < '0' || value[0] > '9')
		return false;
	errno = 0;
	n = strtol(value, &end, 10);
	if (errno != 0)
		return false;
	if (*end == '\0' || strcmp(end, "s") == 0)
		scale = 1000;
	else if (strcmp(end, "ms") == 0)
		scale = 1;
	else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
		scale = 60000;
	else if (strcmp(end, "h") == 0)
		scale = 3600000;
	else
		return false;
	if (n > LONG_MAX / scale)
		return false;
	*ms = n * scale;
	return true;
}

bool
opt_parse_listen(const char *value, char *host, size_t hostlen, char *port, size_t portlen)
{
	const char *colon;
	const char *h;
	size_t      hlen;
	long        p;
	char       *end;

	if (value[0] == '[')
	{
		const char *close = strchr(value, ']');

		if (close == NULL || close[1] != ':')
			return false;
		h = value + 1;
		hlen = (size_t) (close - h);
		colon = close + 1;
		if (memchr(h, ':', hlen) == NULL)
			return false;
	}
	else
	{
		colon = strrchr(value, ':');
		if (colon == NULL)
			return false;
		h = value;
		hlen = (size_t) (colon - value);
		if (memchr(h, ':', hlen) != NULL)
			return false; /* a bare IPv6 address needs brackets */
	}
	if (hlen == 0 || hlen >= hostlen)
		return false;
	if (colon[1] < '0' || colon[1] > '9')
		return false;
	errno = 0;
	p = strtol(colon + 1, &end, 10);
	if (errno != 0 || *end != '\0' || p < 1 || p > 65535)
		return false;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	snprintf(port, portlen, "%ld", p);
	return true;
}

bool
opt_long(const struct opt_spec *opt, void *cfg, const char *value, bool from_env, char *err,
		 size_t errlen)
{
	char  name[64];
	char *end;
	long  n;

	errno = 0;
	n = strtol(value, &end, 10);
	if (value[0] < '0' || value[0] > '9' || errno != 0 || *end != '\0' || n < opt->min ||
		n > opt->max)
	{
		snprintf(err, errlen, "invalid %s \"%s\": expected an integer from %ld to %ld",
				 opt_origin(opt, from_env, name, sizeof name), value, opt->min, opt->max);
		return false;
	}
	*(long *) opt_field(opt, cfg) = n;
	return true;
}

bool
opt_duration(const struct opt_spec *opt, void *cfg, const char *value, bool from_env, char *err,
			 size_t errlen)
{
	char name[64];
	long ms;

	if (!opt_parse_duration(value, &ms) || ms < opt->min || ms > opt->max)
	{
		snprintf(err, errlen,
				 "invalid %s \"%s\": expected a duration such as 500ms, 10s, 2m or 1h, from %ldms "
				 "to %lds",
				 opt_origin(opt, from_env, name, sizeof name), value, opt->min, opt->max / 1000);
		return false;
	}
	*(long *) opt_field(opt, cfg) = ms;
	return true;
}

bool
opt_string(const struct opt_spec *opt, void *cfg, const char *value, bool from_env, char *err,
		   size_t errlen)
{
	char **field = opt_field(opt, cfg);

	(void) from_env;
	free(*field);
	*field = strdup(value);
	if (*field == NULL)
	{
		snprintf(err, errlen, "out of memory");
		return false;
	}
	return true;
}

static int
find_option(const struct opt_spec *specs, int nspecs, const char *name, size_t len)
{
	for (int i = 0; i < nspecs; i++)
		if (strlen(specs[i].name) == len && strncmp(specs[i].name, name, len) == 0)
			return i;
	return -1;
}

enum opt_result
opt_parse(const struct opt_spec *specs, int nspecs, void *cfg, int argc, char **argv,
		  opt_env_fn env, char *err, size_t errlen)
{
	const char    **flag_values = calloc((size_t) nspecs, sizeof *flag_values);
	enum opt_result result = OPT_OK;

	err[0] = '\0';
	if (flag_values == NULL)
	{
		snprintf(err, errlen, "out of memory");
		return OPT_ERROR;
	}

	for (int i = 1; i < argc && result == OPT_OK; i++)
	{
		const char *arg = argv[i];
		const char *eq;
		size_t      namelen;
		int         o;

		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
			result = OPT_HELP;
		else if (strcmp(arg, "--version") == 0)
			result = OPT_VERSION;
		else if (strncmp(arg, "--", 2) != 0)
		{
			snprintf(err, errlen, "unexpected argument \"%s\" (see --help)", arg);
			result = OPT_ERROR;
		}
		else
		{
			eq = strchr(arg + 2, '=');
			namelen = eq ? (size_t) (eq - arg - 2) : strlen(arg + 2);
			o = find_option(specs, nspecs, arg + 2, namelen);
			if (o < 0)
			{
				snprintf(err, errlen, "unknown option \"%.*s\" (see --help)", (int) namelen + 2,
						 arg);
				result = OPT_ERROR;
			}
			else if (eq != NULL)
				flag_values[o] = eq + 1;
			else if (i + 1 < argc)
				flag_values[o] = argv[++i];
			else
			{
				snprintf(err, errlen, "option --%s needs a value", specs[o].name);
				result = OPT_ERROR;
			}
		}
	}

	for (int o = 0; o < nspecs && result == OPT_OK; o++)
	{
		const struct opt_spec *opt = &specs[o];
		const char            *value = flag_values[o];
		bool                   from_env = false;

		if (value == NULL && opt->env != NULL)
		{
			value = env(opt->env);
			if (value != NULL && value[0] == '\0')
				value = NULL;
			from_env = value != NULL;
		}
		if (value == NULL)
			value = opt->def;
		if (value == NULL)
			continue;
		if (!opt->parse(opt, cfg, value, from_env, err, errlen))
			result = OPT_ERROR;
	}
	free(flag_values);
	return result;
}

/* Prints text word-wrapped into the help column. */
static void
print_wrapped(FILE *out, const char *text)
{
	const int width = 78 - HELP_COLUMN;
	int       col = 0;

	while (*text)
	{
		int len = (int) strcspn(text, " ");

		if (col > 0 && col + 1 + len > width)
		{
			fprintf(out, "\n%*s", HELP_COLUMN, "");
			col = 0;
		}
		else if (col > 0)
		{
			fputc(' ', out);
			col++;
		}
		fprintf(out, "%.*s", len, text);
		col += len;
		text += len;
		while (*text == ' ')
			text++;
	}
	fputc('\n', out);
}

void
opt_usage(FILE *out, const struct opt_spec *specs, int nspecs)
{
	for (int i = 0; i < nspecs; i++)
	{
		const struct opt_spec *opt = &specs[i];
		char                   left[64];

		snprintf(left, sizeof left, "--%s %s", opt->name, opt->metavar);
		fprintf(out, "  %-*s ", HELP_COLUMN - 3, left);
		print_wrapped(out, opt->help);
		if (opt->env != NULL)
		{
			fprintf(out, "  %-*s [%s]", HELP_COLUMN - 3, "", opt->env);
			if (opt->def != NULL && opt->def[0] != '\0')
				fprintf(out, " default: %s", opt->def);
			fprintf(out, "\n");
		}
	}
	fprintf(out,
			"  %-*s show this help and exit\n"
			"  %-*s show the version and exit\n",
			HELP_COLUMN - 3, "--help", HELP_COLUMN - 3, "--version");
}
