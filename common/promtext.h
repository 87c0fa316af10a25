/*
 * promtext.h - building a Prometheus text exposition (format 0.0.4):
 * a growing buffer and the HELP/TYPE/sample lines of counters, gauges and
 * histograms.
 */
#ifndef PROVISION_PROMTEXT_H
#define PROVISION_PROMTEXT_H

#include <stdbool.h>
#include <stddef.h>

struct prom_buffer
{
	char  *data;
	size_t len;
	size_t cap;
	bool   failed; /* out of memory: the exposition is dropped */
};

void prom_init(struct prom_buffer *b);

void prom_append(struct prom_buffer *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "# HELP name help" and "# TYPE name type". */
void prom_header(struct prom_buffer *b, const char *name, const char *type, const char *help);

/* A counter without labels: its HELP and TYPE lines and its one sample. */
void prom_counter(struct prom_buffer *b, const char *name, const char *help, unsigned long value);

/*
 * One histogram series: bucket counts (not cumulative) for the upper
 * bounds, then +Inf, _sum and _count.  labels is "" or 'key="value"'.
 */
void prom_histogram(struct prom_buffer *b, const char *name, const char *labels,
					const double *bounds, const unsigned long *counts, int nbounds,
					unsigned long count, double sum);

/* The text, NUL-terminated, to free(); NULL after an allocation failure. */
char *prom_finish(struct prom_buffer *b, size_t *len);

#endif
