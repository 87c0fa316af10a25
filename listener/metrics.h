/*
 * metrics.h - process-wide counters and gauges, rendered in the Prometheus
 * text exposition format.  Updates are lock-free atomics, safe from the HTTP
 * thread and every worker.
 */
#ifndef PROVISION_METRICS_H
#define PROVISION_METRICS_H

#include <stddef.h>

enum endpoint
{
	ENDPOINT_WEBHOOK,     /* /webhooks/github */
	ENDPOINT_API_WEBHOOK, /* /api/webhooks/github */
	ENDPOINT_STRIPE,      /* /webhooks/stripe */
	ENDPOINT_HEALTHZ,
	ENDPOINT_READYZ,
	ENDPOINT_METRICS,
	ENDPOINT_OTHER, /* anything unknown, one label value */
	ENDPOINT_COUNT
};

/* The endpoint label for a request path. */
enum endpoint endpoint_for_path(const char *path);
const char   *endpoint_label(enum endpoint ep);

void metrics_observe_request(enum endpoint ep, unsigned int status, double seconds);
void metrics_signature_failure(void);
void metrics_duplicate(void);
void metrics_db_error(void);
void metrics_db_reconnect(void);
void metrics_readiness_probe(void);
void metrics_set_pool_size(long n);
void metrics_pool_in_use_add(long delta);

/* The whole exposition as a NUL-terminated string; free() it. */
char *metrics_render(size_t *len);

#endif
