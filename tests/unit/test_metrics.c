/*
 * test_metrics.c - the Prometheus exposition: names, HELP/TYPE lines,
 * cumulative histogram buckets and label values.
 */
#include "metrics.h"
#include "tap.h"

#include <stdlib.h>

static bool
has_line(const char *text, const char *line)
{
	size_t n = strlen(line);

	for (const char *p = text; (p = strstr(p, line)) != NULL; p += n)
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return true;
	return false;
}

int
main(void)
{
	size_t len;
	char  *text;

	is_int(endpoint_for_path("/webhooks/github"), ENDPOINT_WEBHOOK, "path: webhook");
	is_int(endpoint_for_path("/api/webhooks/github"), ENDPOINT_API_WEBHOOK, "path: api webhook");
	is_int(endpoint_for_path("/webhooks/github/"), ENDPOINT_OTHER, "path: trailing slash is other");
	is_int(endpoint_for_path("/readyz"), ENDPOINT_READYZ, "path: readyz");
	is_int(endpoint_for_path("/webhooks/stripe"), ENDPOINT_STRIPE, "path: stripe");
	is_str(endpoint_label(ENDPOINT_STRIPE), "/webhooks/stripe", "label: stripe");

	metrics_observe_request(ENDPOINT_WEBHOOK, 200, 0.0005);
	metrics_observe_request(ENDPOINT_WEBHOOK, 200, 0.003);
	metrics_observe_request(ENDPOINT_WEBHOOK, 409, 20);
	metrics_observe_request(ENDPOINT_OTHER, 404, 0.0001);
	metrics_signature_failure();
	metrics_duplicate();
	metrics_duplicate();
	metrics_db_error();
	metrics_db_reconnect();
	metrics_readiness_probe();
	metrics_readiness_probe();
	metrics_set_pool_size(10);
	metrics_pool_in_use_add(3);
	metrics_pool_in_use_add(-1);

	text = metrics_render(&len);
	ok(text != NULL && strlen(text) == len, "render: returns its length");
	ok(has_line(text, "# TYPE provision_http_requests_total counter"), "requests: TYPE");
	ok(has_line(text,
				"provision_http_requests_total{endpoint=\"/webhooks/github\",code=\"200\"} 2"),
	   "requests: 200 counted twice");
	ok(has_line(text,
				"provision_http_requests_total{endpoint=\"/webhooks/github\",code=\"409\"} 1"),
	   "requests: 409 counted");
	ok(has_line(text, "provision_http_requests_total{endpoint=\"other\",code=\"404\"} 1"),
	   "requests: unknown paths share one label");
	ok(has_line(text, "# TYPE provision_http_request_duration_seconds histogram"),
	   "histogram: TYPE");
	ok(has_line(text, "provision_http_request_duration_seconds_bucket{endpoint=\"/webhooks/"
					  "github\",le=\"0.001\"} 1"),
	   "histogram: first bucket");
	ok(has_line(text, "provision_http_request_duration_seconds_bucket{endpoint=\"/webhooks/"
					  "github\",le=\"0.005\"} 2"),
	   "histogram: buckets are cumulative");
	ok(has_line(text, "provision_http_request_duration_seconds_bucket{endpoint=\"/webhooks/"
					  "github\",le=\"10\"} 2"),
	   "histogram: 20s is above the last bucket");
	ok(has_line(text, "provision_http_request_duration_seconds_bucket{endpoint=\"/webhooks/"
					  "github\",le=\"+Inf\"} 3"),
	   "histogram: +Inf counts everything");
	ok(has_line(text,
				"provision_http_request_duration_seconds_count{endpoint=\"/webhooks/github\"} 3"),
	   "histogram: count");
	ok(strstr(
		   text,
		   "provision_http_request_duration_seconds_sum{endpoint=\"/webhooks/github\"} 20.0035") !=
		   NULL,
	   "histogram: sum");
	ok(has_line(text, "provision_signature_failures_total 1"), "signature failures");
	ok(has_line(text, "provision_duplicate_deliveries_total 2"), "duplicates");
	ok(has_line(text, "provision_db_errors_total 1"), "db errors");
	ok(has_line(text, "provision_db_reconnects_total 1"), "db reconnects");
	ok(has_line(text, "# TYPE provision_readiness_probes_total counter") &&
		   has_line(text, "provision_readiness_probes_total 2"),
	   "readiness probes");
	ok(has_line(text, "# TYPE provision_db_pool_size gauge") &&
		   has_line(text, "provision_db_pool_size 10"),
	   "pool size gauge");
	ok(has_line(text, "provision_db_pool_in_use 2"), "pool in use gauge");
	ok(strstr(text, "/healthz") == NULL, "endpoints without traffic are omitted");
	{
		int help = 0;
		int type = 0;

		for (const char *p = text; (p = strstr(p, "# HELP ")) != NULL; p++)
			help++;
		for (const char *p = text; (p = strstr(p, "# TYPE ")) != NULL; p++)
			type++;
		is_int(help, 9, "every metric has HELP");
		is_int(type, 9, "every metric has TYPE");
	}
	free(text);
	return done_testing();
}
