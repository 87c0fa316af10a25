/*
 * promtext.c - the Prometheus text format.
 */
#include "promtext.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define PROM_INITIAL 8192

void
prom_init(struct prom_buffer *b)
{
	b->data = malloc(PROM_INITIAL);
	b->len = 0;
	b->cap = PROM_INITIAL;
	b->failed = b->data == NULL;
	if (b->data != NULL)
		b->data[0] = '\0';
}

void
prom_append(struct prom_buffer *b, const char *fmt, ...)
{
	va_list ap;
	int     n;

	while (!b->failed)
	{
		va_start(ap, fmt);
		n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0)
			b->failed = true;
		else if ((size_t) n < b->cap - b->len)
		{
			b->len += (size_t) n;
			return;
		}
		else
		{
			size_t cap = b->cap * 2 + (size_t) n;
			char  *data = realloc(b->data, cap);

			if (data == NULL)
				b->failed = true;
			else
			{
				b->data = data;
				b->cap = cap;
			}
		}
	}
}

void
prom_header(struct prom_buffer *b, const char *name, const char *type, const char *help)
{
	prom_append(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void
prom_counter(struct prom_buffer *b, const char *name, const char *help, unsigned long value)
{
	prom_header(b, name, "counter", help);
	prom_append(b, "%s %lu\n", name, value);
}

void
prom_histogram(struct prom_buffer *b, const char *name, const char *labels, const double *bounds,
			   const unsigned long *counts, int nbounds, unsigned long count, double sum)
{
	const char   *sep = labels[0] != '\0' ? "," : "";
	unsigned long cumulative = 0;

	for (int i = 0; i < nbounds; i++)
	{
		cumulative += counts[i];
		prom_append(b, "%s_bucket{%s%sle=\"%g\"} %lu\n", name, labels, sep, bounds[i], cumulative);
	}
	prom_append(b, "%s_bucket{%s%sle=\"+Inf\"} %lu\n", name, labels, sep, count);
	if (labels[0] != '\0')
	{
		prom_append(b, "%s_sum{%s} %.9f\n", name, labels, sum);
		prom_append(b, "%s_count{%s} %lu\n", name, labels, count);
	}
	else
	{
		prom_append(b, "%s_sum %.9f\n", name, sum);
		prom_append(b, "%s_count %lu\n", name, count);
	}
}

char *
prom_finish(struct prom_buffer *b, size_t *len)
{
	if (b->failed)
	{
		free(b->data);
		b->data = NULL;
		return NULL;
	}
	*len = b->len;
	return b->data;
}
