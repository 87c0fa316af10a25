/*
 * fuzz.h - helpers shared by the libFuzzer targets.
 *
 * A target's input is a few newline-separated fields followed by a raw last
 * field (usually a request body).  Fields that the input does not reach are
 * NULL, which is how an absent header is represented, so "header missing"
 * paths are explored too.  Every field lives in its own allocation of exactly
 * its size (plus the terminating NUL for string fields), so AddressSanitizer
 * reports any read past a field's end.
 */
#ifndef PROVISION_FUZZ_H
#define PROVISION_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "verify.h"

#define FUZZ_MAX_FIELDS 8

struct fuzz_fields
{
	char          *str[FUZZ_MAX_FIELDS]; /* the first n - 1 fields, NUL-terminated */
	unsigned char *raw;                  /* the last field, exactly raw_len bytes */
	size_t         raw_len;
	int            n;
};

/* Splits data into nstr strings (each ended by '\n') and the raw rest. */
static inline void
fuzz_split(const uint8_t *data, size_t size, int nstr, struct fuzz_fields *f)
{
	size_t pos = 0;

	memset(f, 0, sizeof *f);
	f->n = nstr;
	for (int i = 0; i < nstr; i++)
	{
		const uint8_t *nl = pos < size ? memchr(data + pos, '\n', size - pos) : NULL;

		if (nl == NULL)
		{
			/* the input ends inside this field: it is the last one present */
			if (pos < size)
			{
				f->str[i] = malloc(size - pos + 1);
				memcpy(f->str[i], data + pos, size - pos);
				f->str[i][size - pos] = '\0';
			}
			pos = size;
			break;
		}
		f->str[i] = malloc((size_t) (nl - (data + pos)) + 1);
		memcpy(f->str[i], data + pos, (size_t) (nl - (data + pos)));
		f->str[i][nl - (data + pos)] = '\0';
		pos = (size_t) (nl - data) + 1;
	}
	f->raw_len = size - pos;
	f->raw = malloc(f->raw_len ? f->raw_len : 1);
	memcpy(f->raw, data + pos, f->raw_len);
}

static inline void
fuzz_free(struct fuzz_fields *f)
{
	for (int i = 0; i < f->n; i++)
		free(f->str[i]);
	free(f->raw);
}

/* A failed property: report it and abort, which libFuzzer records as a crash. */
#define fuzz_check(cond)                                                                           \
	do                                                                                             \
	{                                                                                              \
		if (!(cond))                                                                               \
		{                                                                                          \
			fprintf(stderr, "fuzz property violated: %s (%s:%d)\n", #cond, __FILE__, __LINE__);    \
			abort();                                                                               \
		}                                                                                          \
	} while (0)

/*
 * Parses a target's fixed secret list (two secrets, one per line) at start-up;
 * a failure is a broken target, not a finding.
 */
static inline void
fuzz_load_secrets(const char *target, const char *text, size_t len, struct secrets *out)
{
	char err[200];

	if (!secrets_parse(text, len, SECRET_FORM_WEBHOOK, out, err, sizeof err) || out->count != 2)
	{
		fprintf(stderr, "%s: secrets_parse: %s\n", target, err);
		abort();
	}
}

#endif
