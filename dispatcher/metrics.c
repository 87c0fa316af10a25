/*
 * metrics.c - the dispatcher's metrics in the Prometheus text format.
 */
#include "metrics.h"

#include "promtext.h"

#include <stdatomic.h>
#include <stdio.h>

#define STATUS_MAX 599 /* status 0: no answer (timeout, network, TLS) */

static const double buckets[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

#define NBUCKETS ((int) (sizeof buckets / sizeof buckets[0]))

static const char *const endpoint_labels[API_ENDPOINT_COUNT] = {"dispatch", "runs", "token"};
static const char *const outcome_labels[OUTCOME_COUNT] = {
	"run", "no_run", "fallback", "renewed", "rate_limited", "retry", "failed", "gave_up"};

static atomic_ulong  api_calls[API_ENDPOINT_COUNT][STATUS_MAX + 1];
static atomic_ulong  api_buckets[API_ENDPOINT_COUNT][NBUCKETS]; /* not cumulative */
static atomic_ulong  api_count[API_ENDPOINT_COUNT];
static atomic_ullong api_sum_ns[API_ENDPOINT_COUNT];
static atomic_ulong  dispatches[OUTCOME_COUNT];
static atomic_ulong  rate_limit_pauses;
static atomic_ulong  retries;
static atomic_ulong  reconciled_adopted;
static atomic_ulong  reconciled_resent;
static atomic_ulong  token_renewals;
static atomic_ulong  db_errors;
static atomic_ulong  db_reconnects;
static atomic_long   held_jobs;
static atomic_int    paused;

const char *
outcome_label(enum dispatch_outcome outcome)
{
	return outcome_labels[outcome];
}

void
metrics_api_call(enum api_endpoint ep, long status, double seconds)
{
	int b;

	if (status < 0 || status > STATUS_MAX)
		status = 0;
	atomic_fetch_add_explicit(&api_calls[ep][status], 1, memory_order_relaxed);
	for (b = 0; b < NBUCKETS && seconds > buckets[b]; b++)
		;
	if (b < NBUCKETS)
		atomic_fetch_add_explicit(&api_buckets[ep][b], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&api_count[ep], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&api_sum_ns[ep], (unsigned long long) (seconds * 1e9),
							  memory_order_relaxed);
}

void
metrics_dispatch(enum dispatch_outcome outcome)
{
	atomic_fetch_add_explicit(&dispatches[outcome], 1, memory_order_relaxed);
}

void
metrics_rate_limit_pause(void)
{
	atomic_fetch_add_explicit(&rate_limit_pauses, 1, memory_order_relaxed);
}

void
metrics_retry(void)
{
	atomic_fetch_add_explicit(&retries, 1, memory_order_relaxed);
}

void
metrics_reconciled(bool adopted)
{
	atomic_fetch_add_explicit(adopted ? &reconciled_adopted : &reconciled_resent, 1,
							  memory_order_relaxed);
}

void
metrics_token_renewal(void)
{
	atomic_fetch_add_explicit(&token_renewals, 1, memory_order_relaxed);
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
metrics_set_held_jobs(long n)
{
	atomic_store(&held_jobs, n);
}

void
metrics_set_paused(bool on)
{
	atomic_store(&paused, on ? 1 : 0);
}

char *
metrics_render(size_t *len)
{
	struct prom_buffer b;

	prom_init(&b);

	prom_header(&b, "provision_dispatcher_dispatches_total", "counter",
				"Workflow dispatch calls by what they came to.");
	for (int o = 0; o < OUTCOME_COUNT; o++)
		prom_append(&b, "provision_dispatcher_dispatches_total{outcome=\"%s\"} %lu\n",
					outcome_labels[o], atomic_load(&dispatches[o]));

	prom_header(&b, "provision_dispatcher_api_requests_total", "counter",
				"GitHub API calls by endpoint and status code (0: no answer).");
	for (int ep = 0; ep < API_ENDPOINT_COUNT; ep++)
		for (int s = 0; s <= STATUS_MAX; s++)
		{
			unsigned long n = atomic_load_explicit(&api_calls[ep][s], memory_order_relaxed);

			if (n > 0)
				prom_append(&b,
							"provision_dispatcher_api_requests_total{endpoint=\"%s\",code=\"%d\"} "
							"%lu\n",
							endpoint_labels[ep], s, n);
		}

	prom_header(&b, "provision_dispatcher_api_request_duration_seconds", "histogram",
				"Time a GitHub API call took, until its answer or its failure.");
	for (int ep = 0; ep < API_ENDPOINT_COUNT; ep++)
	{
		unsigned long counts[NBUCKETS];
		unsigned long count = atomic_load(&api_count[ep]);
		char          labels[64];

		if (count == 0)
			continue;
		for (int i = 0; i < NBUCKETS; i++)
			counts[i] = atomic_load(&api_buckets[ep][i]);
		snprintf(labels, sizeof labels, "endpoint=\"%s\"", endpoint_labels[ep]);
		prom_histogram(&b, "provision_dispatcher_api_request_duration_seconds", labels, buckets,
					   counts, NBUCKETS, count, atomic_load(&api_sum_ns[ep]) / 1e9);
	}

	prom_counter(&b, "provision_dispatcher_rate_limit_pauses_total",
				 "Times dispatching paused for a GitHub rate limit.",
				 atomic_load(&rate_limit_pauses));
	prom_counter(&b, "provision_dispatcher_retries_total",
				 "Dispatch calls that failed transiently and were scheduled again.",
				 atomic_load(&retries));
	prom_header(&b, "provision_dispatcher_reconciled_jobs_total", "counter",
				"Dispatched jobs without a recorded run that reconciliation adopted a run for or "
				"sent again.");
	prom_append(&b,
				"provision_dispatcher_reconciled_jobs_total{action=\"adopted\"} %lu\n"
				"provision_dispatcher_reconciled_jobs_total{action=\"resent\"} %lu\n",
				atomic_load(&reconciled_adopted), atomic_load(&reconciled_resent));
	prom_counter(&b, "provision_dispatcher_token_renewals_total",
				 "GitHub App installation tokens obtained.", atomic_load(&token_renewals));
	prom_counter(&b, "provision_dispatcher_db_errors_total",
				 "Database calls and connection attempts that failed.", atomic_load(&db_errors));
	prom_counter(&b, "provision_dispatcher_db_reconnects_total",
				 "Database connections re-established after a failure.",
				 atomic_load(&db_reconnects));
	prom_header(&b, "provision_dispatcher_held_jobs", "gauge",
				"Claimed jobs this dispatcher is working on (sending, retrying or recording).");
	prom_append(&b, "provision_dispatcher_held_jobs %ld\n", atomic_load(&held_jobs));
	prom_header(&b, "provision_dispatcher_rate_limited", "gauge",
				"1 while dispatching is paused for a rate limit.");
	prom_append(&b, "provision_dispatcher_rate_limited %d\n", atomic_load(&paused));

	return prom_finish(&b, len);
}
