/*
 * metrics.c - counters and gauges in the Prometheus text format.
 */
#include "metrics.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATUS_MIN 100
#define STATUS_MAX 599
#define NSTATUS    (STATUS_MAX - STATUS_MIN + 1)

static const double buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
								 0.25,  0.5,    1,     2.5,  5,     10};

#define NBUCKETS ((int) (sizeof buckets / sizeof buckets[0]))

static const char *const endpoint_labels[ENDPOINT_COUNT] = {"/webhooks/github",
															"/api/webhooks/github",
															"/webhooks/stripe",
															"/healthz",
															"/readyz",
															"/metrics",
															"other"};

static atomic_ulong  requests[ENDPOINT_COUNT][NSTATUS];
static atomic_ulong  bucket_counts[ENDPOINT_COUNT][NBUCKETS]; /* not cumulative */
static atomic_ulong  duration_count[ENDPOINT_COUNT];
static atomic_ullong duration_sum_ns[ENDPOINT_COUNT];
static atomic_ulong  signature_failures;
static atomic_ulong  duplicates;
static atomic_ulong  db_errors;
static atomic_ulong  db_reconnects;
static atomic_ulong  readiness_probes;
static atomic_long   pool_size;
static atomic_long   pool_in_use;

enum endpoint
endpoint_for_path(const char *path)
{
	for (int i = 0; i < ENDPOINT_OTHER; i++)
		if (strcmp(path, endpoint_labels[i]) == 0)
			return (enum endpoint) i;
	return ENDPOINT_OTHER;
}

const char *
endpoint_label(enum endpoint ep)
{
	return endpoint_labels[ep];
}

void
metrics_observe_request(enum endpoint ep, unsigned int status, double seconds)
{
	int b;

	if (status >= STATUS_MIN && status <= STATUS_MAX)
		atomic_fetch_add_explicit(&requests[ep][status - STATUS_MIN], 1, memory_order_relaxed);
	for (b = 0; b < NBUCKETS && seconds > buckets[b]; b++)
		;
	if (b < NBUCKETS)
		atomic_fetch_add_explicit(&bucket_counts[ep][b], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&duration_count[ep], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&duration_sum_ns[ep], (unsigned long long) (seconds * 1e9),
							  memory_order_relaxed);
}

void
metrics_signature_failure(void)
{
	atomic_fetch_add_explicit(&signature_failures, 1, memory_order_relaxed);
}

void
metrics_duplicate(void)
{
	atomic_fetch_add_explicit(&duplicates, 1, memory_order_relaxed);
}

void
metrics_db_error(void)
{
	atomic_fetch_add_explicit(&db_errors, 1, memory_order_relaxed);
}

void
metrics_db_reconnect(void)
{
	atomic_fetch_add_explicit(&db_reconnects, 1, memory_order_relaxed);
}

void
metrics_readiness_probe(void)
{
	atomic_fetch_add_explicit(&readiness_probes, 1, memory_order_relaxed);
}

void
metrics_set_pool_size(long n)
{
	atomic_store(&pool_size, n);
}

void
metrics_pool_in_use_add(long delta)
{
	atomic_fetch_add(&pool_in_use, delta);
}

struct buffer
{
	char  *data;
	size_t len;
	size_t cap;
	bool   failed;
};

static void append(struct buffer *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
append(struct buffer *b, const char *fmt, ...)
{
	va_list ap;
	int     n;

	if (b->failed)
		return;
	for (;;)
	{
		va_start(ap, fmt);
		n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0)
		{
			b->failed = true;
			return;
		}
		if ((size_t) n < b->cap - b->len)
		{
			b->len += (size_t) n;
			return;
		}
		{
			size_t cap = b->cap * 2 + (size_t) n;
			char  *data = realloc(b->data, cap);

			if (data == NULL)
			{
				b->failed = true;
				return;
			}
			b->data = data;
			b->cap = cap;
		}
	}
}

static void
counter(struct buffer *b, const char *name, const char *help, atomic_ulong *v)
{
	append(b, "# HELP %s %s\n# TYPE %s counter\n%s %lu\n", name, help, name, name, atomic_load(v));
}

char *
metrics_render(size_t *len)
{
	struct buffer b = {malloc(16384), 0, 16384, false};

	if (b.data == NULL)
		return NULL;

	append(&b, "# HELP provision_http_requests_total HTTP requests answered, by endpoint and "
			   "status code.\n"
			   "# TYPE provision_http_requests_total counter\n");
	for (int ep = 0; ep < ENDPOINT_COUNT; ep++)
		for (int s = 0; s < NSTATUS; s++)
		{
			unsigned long n = atomic_load_explicit(&requests[ep][s], memory_order_relaxed);

			if (n > 0)
				append(&b, "provision_http_requests_total{endpoint=\"%s\",code=\"%d\"} %lu\n",
					   endpoint_labels[ep], s + STATUS_MIN, n);
		}

	append(&b, "# HELP provision_http_request_duration_seconds Time from the request's headers to "
			   "its answer.\n"
			   "# TYPE provision_http_request_duration_seconds histogram\n");
	for (int ep = 0; ep < ENDPOINT_COUNT; ep++)
	{
		unsigned long cumulative = 0;
		unsigned long count = atomic_load(&duration_count[ep]);

		if (count == 0)
			continue;
		for (int i = 0; i < NBUCKETS; i++)
		{
			cumulative += atomic_load(&bucket_counts[ep][i]);
			append(
				&b,
				"provision_http_request_duration_seconds_bucket{endpoint=\"%s\",le=\"%g\"} %lu\n",
				endpoint_labels[ep], buckets[i], cumulative);
		}
		append(&b,
			   "provision_http_request_duration_seconds_bucket{endpoint=\"%s\",le=\"+Inf\"} %lu\n",
			   endpoint_labels[ep], count);
		append(&b, "provision_http_request_duration_seconds_sum{endpoint=\"%s\"} %.9f\n",
			   endpoint_labels[ep], atomic_load(&duration_sum_ns[ep]) / 1e9);
		append(&b, "provision_http_request_duration_seconds_count{endpoint=\"%s\"} %lu\n",
			   endpoint_labels[ep], count);
	}

	counter(&b, "provision_signature_failures_total",
			"Callbacks and Stripe events refused because their signature was missing, malformed, "
			"wrong, expired or of a scheme not accepted.",
			&signature_failures);
	counter(&b, "provision_duplicate_deliveries_total",
			"Callbacks whose delivery id, and Stripe events whose event id, had already been "
			"applied.",
			&duplicates);
	counter(&b, "provision_db_errors_total",
			"Database calls and connection attempts that failed (including calls later retried; "
			"not callbacks the database refused with a 4xx answer).",
			&db_errors);
	counter(&b, "provision_db_reconnects_total",
			"Database connections re-established after a failure.", &db_reconnects);
	counter(&b, "provision_readiness_probes_total",
			"Readiness probes run against the database for /readyz (at most about one a second).",
			&readiness_probes);
	append(&b,
		   "# HELP provision_db_pool_size Database connections in the pool.\n"
		   "# TYPE provision_db_pool_size gauge\nprovision_db_pool_size %ld\n",
		   atomic_load(&pool_size));
	append(&b,
		   "# HELP provision_db_pool_in_use Database connections currently borrowed by a request.\n"
		   "# TYPE provision_db_pool_in_use gauge\nprovision_db_pool_in_use %ld\n",
		   atomic_load(&pool_in_use));

	if (b.failed)
	{
		free(b.data);
		return NULL;
	}
	*len = b.len;
	return b.data;
}
