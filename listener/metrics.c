/*
 * metrics.c - counters and gauges in the Prometheus text format.
 */
#include "metrics.h"

#include "promtext.h"

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

char *
metrics_render(size_t *len)
{
	struct prom_buffer b;

	prom_init(&b);
	prom_header(&b, "provision_http_requests_total", "counter",
				"HTTP requests answered, by endpoint and status code.");
	for (int ep = 0; ep < ENDPOINT_COUNT; ep++)
		for (int s = 0; s < NSTATUS; s++)
		{
			unsigned long n = atomic_load_explicit(&requests[ep][s], memory_order_relaxed);

			if (n > 0)
				prom_append(&b, "provision_http_requests_total{endpoint=\"%s\",code=\"%d\"} %lu\n",
							endpoint_label((enum endpoint) ep), s + STATUS_MIN, n);
		}

	prom_header(&b, "provision_http_request_duration_seconds", "histogram",
				"Time from the request's headers to its answer.");
	for (int ep = 0; ep < ENDPOINT_COUNT; ep++)
	{
		unsigned long count = atomic_load(&duration_count[ep]);
		unsigned long counts[NBUCKETS];
		char          labels[64];

		if (count == 0)
			continue;
		for (int i = 0; i < NBUCKETS; i++)
			counts[i] = atomic_load(&bucket_counts[ep][i]);
		snprintf(labels, sizeof labels, "endpoint=\"%s\"", endpoint_label((enum endpoint) ep));
		prom_histogram(&b, "provision_http_request_duration_seconds", labels, buckets, counts,
					   NBUCKETS, count, atomic_load(&duration_sum_ns[ep]) / 1e9);
	}

	prom_counter(
		&b, "provision_signature_failures_total",
		"Callbacks and Stripe events refused because their signature was missing, malformed, "
		"wrong, expired or of a scheme not accepted.",
		atomic_load(&signature_failures));
	prom_counter(&b, "provision_duplicate_deliveries_total",
				 "Callbacks whose delivery id, and Stripe events whose event id, had already been "
				 "applied.",
				 atomic_load(&duplicates));
	prom_counter(
		&b, "provision_db_errors_total",
		"Database calls and connection attempts that failed (including calls later retried; "
		"not callbacks the database refused with a 4xx answer).",
		atomic_load(&db_errors));
	prom_counter(&b, "provision_db_reconnects_total",
				 "Database connections re-established after a failure.",
				 atomic_load(&db_reconnects));
	prom_counter(
		&b, "provision_readiness_probes_total",
		"Readiness probes run against the database for /readyz (at most about one a second).",
		atomic_load(&readiness_probes));
	prom_header(&b, "provision_db_pool_size", "gauge", "Database connections in the pool.");
	prom_append(&b, "provision_db_pool_size %ld\n", atomic_load(&pool_size));
	prom_header(&b, "provision_db_pool_in_use", "gauge",
				"Database connections currently borrowed by a request.");
	prom_append(&b, "provision_db_pool_in_use %ld\n", atomic_load(&pool_in_use));
	return prom_finish(&b, len);
}
