/*
 * test_route.c - routing and what the request alone decides: the endpoint
 * of a path, content types, the header checks in their order, framing, and
 * the body parsed once (JSON object, no repeated key, job id, event fields).
 */
#include "route.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

static void
test_endpoints(void)
{
	is_int(endpoint_for_path("/webhooks/github"), ENDPOINT_WEBHOOK, "path: webhook");
	is_int(endpoint_for_path("/api/webhooks/github"), ENDPOINT_API_WEBHOOK, "path: api webhook");
	is_int(endpoint_for_path("/webhooks/github/"), ENDPOINT_OTHER, "path: trailing slash is other");
	is_int(endpoint_for_path("/readyz"), ENDPOINT_READYZ, "path: readyz");
	is_int(endpoint_for_path("/healthz"), ENDPOINT_HEALTHZ, "path: healthz");
	is_int(endpoint_for_path("/metrics"), ENDPOINT_METRICS, "path: metrics");
	is_int(endpoint_for_path("/webhooks/stripe"), ENDPOINT_STRIPE, "path: stripe");
	is_int(endpoint_for_path("other"), ENDPOINT_OTHER, "path: the label other is no path");
	is_str(endpoint_label(ENDPOINT_STRIPE), "/webhooks/stripe", "label: stripe");
	is_str(endpoint_label(ENDPOINT_OTHER), "other", "label: other");
}

static void
test_parse_body(void)
{
	char   buf[32];
	cJSON *obj;
	char   err[160];

	{
		const char *text = "{\"job_id\":\"abc\",\"status\":\"running\"}\n";

		obj = parse_callback_body(text, strlen(text), err, sizeof err);
	}
	ok(obj != NULL, "callback body: object parses");
	is_str(json_job_id(obj, buf, sizeof buf), "abc", "callback body: job_id read");
	cJSON_Delete(obj);

	obj = parse_callback_body("{\"job_id\":7,\"duplicate\":true}", 29, err, sizeof err);
	ok(obj != NULL && json_job_id(obj, buf, sizeof buf) == NULL,
	   "callback body: numeric job_id is not a string");
	cJSON_Delete(obj);

	{
		const char *event = "{\"id\":\"evt_123\",\"type\":\"checkout.session.completed\",\"n\":1}";

		obj = parse_callback_body(event, strlen(event), err, sizeof err);
	}
	is_str(json_string_member(obj, "id", buf, sizeof buf), "evt_123", "string member: id");
	is_str(json_string_member(obj, "type", buf, 9), "checkout", "string member: cut to the buffer");
	ok(json_string_member(obj, "n", buf, sizeof buf) == NULL, "string member: a number is not one");
	ok(json_string_member(obj, "x", buf, sizeof buf) == NULL, "string member: missing");
	cJSON_Delete(obj);

	ok(parse_callback_body("[1,2]", 5, err, sizeof err) == NULL &&
		   strstr(err, "JSON object") != NULL,
	   "callback body: array refused (%s)", err);
	ok(parse_callback_body("\"x\"", 3, err, sizeof err) == NULL &&
		   strstr(err, "JSON object") != NULL,
	   "callback body: string refused");
	ok(parse_callback_body("{\"a\":", 5, err, sizeof err) == NULL &&
		   strstr(err, "not valid JSON") != NULL,
	   "callback body: truncated refused");
	ok(parse_callback_body("{} {}", 5, err, sizeof err) == NULL && strstr(err, "trailing") != NULL,
	   "callback body: trailing data refused");
	ok(parse_callback_body("{}\0{}", 5, err, sizeof err) == NULL,
	   "callback body: embedded NUL refused");
	ok(parse_callback_body("", 0, err, sizeof err) == NULL && strstr(err, "empty") != NULL,
	   "callback body: empty refused");
	obj = parse_callback_body("{}xyz", 2, err, sizeof err);
	ok(obj != NULL, "callback body: length bounds the parse");
	cJSON_Delete(obj);
}

static void
test_content_type(void)
{
	ok(content_type_is_json("application/json"), "content type: plain");
	ok(content_type_is_json("application/json; charset=utf-8"), "content type: charset");
	ok(content_type_is_json("Application/JSON;charset=UTF-8"), "content type: any case");
	ok(content_type_is_json("application/json ; charset=utf-8"), "content type: space before ;");
	ok(content_type_is_json(" application/json"), "content type: leading space");
	ok(!content_type_is_json(NULL), "content type: missing");
	ok(!content_type_is_json(""), "content type: empty");
	ok(!content_type_is_json("text/plain"), "content type: text/plain");
	ok(!content_type_is_json("application/jsonx"), "content type: longer type");
	ok(!content_type_is_json("application/json-patch+json"), "content type: json-patch");
	ok(!content_type_is_json("application/x-www-form-urlencoded"), "content type: form");
	ok(!content_type_is_json("application"), "content type: truncated");
}

static void
test_duplicate_keys(void)
{
	char   err[160];
	cJSON *obj;

#define REFUSED(text, want, what)                                                                  \
	ok(parse_callback_body(text, strlen(text), err, sizeof err) == NULL && strcmp(err, want) == 0, \
	   "duplicate keys: %s (%s)", what, err)

	REFUSED("{\"job_id\":\"a\",\"status\":\"running\",\"status\":\"failed\"}",
			"request body repeats the key \"status\" at the top level", "a repeated status");
	REFUSED("{\"job_id\":\"a\",\"status\":\"x\",\"job_id\":\"b\"}",
			"request body repeats the key \"job_id\" at the top level", "apart, first and last");
	REFUSED("{\"status\":1,\"st\\u0061tus\":2}",
			"request body repeats the key \"status\" at the top level",
			"equal after unescaping, as jsonb compares them");
	REFUSED("{\"a\":null,\"a\":null}", "request body repeats the key \"a\" at the top level",
			"even with equal values");
	REFUSED("{\"\":1,\"\":2}", "request body repeats a key at the top level",
			"the empty key, not echoed");
	REFUSED("{\"line\\nbreak\":1,\"line\\nbreak\":2}",
			"request body repeats a key at the top level", "a key with a control character");

	{
		const char *nested = "{\"a\":{\"x\":1,\"x\":2},\"b\":[{\"y\":1,\"y\":1}]}";

		obj = parse_callback_body(nested, strlen(nested), err, sizeof err);
	}
	ok(obj != NULL, "duplicate keys: only the top level is checked");
	cJSON_Delete(obj);
	obj = parse_callback_body("{\"Status\":1,\"status\":2}", 23, err, sizeof err);
	ok(obj != NULL, "duplicate keys: keys are case-sensitive");
	cJSON_Delete(obj);
#undef REFUSED
}

static void
head(struct head_decision *d, enum endpoint ep, const char *method, const char *length,
	 const char *encoding, const char *type)
{
	struct request_head h = {.ep = ep,
							 .method = method,
							 .content_length = length,
							 .transfer_encoding = encoding,
							 .content_type = type,
							 .max_body = 100,
							 .stripe_configured = true,
							 .content_lengths = length != NULL,
							 .transfer_encodings = encoding != NULL};

	decide_headers(&h, d);
}

static void
test_decide_headers(void)
{
	struct head_decision d;

	head(&d, ENDPOINT_OTHER, "POST", "10", NULL, "application/json");
	ok(d.status == 404 && strstr(d.message, "/webhooks/github"), "headers: unknown path 404");
	head(&d, ENDPOINT_OTHER, "DELETE", "9999", NULL, "text/plain");
	is_int(d.status, 404, "headers: route before method, size and type");
	head(&d, ENDPOINT_WEBHOOK, "GET", NULL, NULL, NULL);
	ok(d.status == 405 && strcmp(d.allow, "POST") == 0,
	   "headers: GET on the callback 405 Allow POST");
	head(&d, ENDPOINT_API_WEBHOOK, "PUT", "9999", NULL, "text/plain");
	is_int(d.status, 405, "headers: method before size and type");
	head(&d, ENDPOINT_HEALTHZ, "POST", NULL, NULL, NULL);
	ok(d.status == 405 && strcmp(d.allow, "GET, HEAD") == 0, "headers: POST on a probe 405");
	head(&d, ENDPOINT_READYZ, "HEAD", NULL, NULL, NULL);
	ok(d.status == 0 && !d.is_webhook, "headers: HEAD on a probe passes");
	head(&d, ENDPOINT_METRICS, "GET", NULL, NULL, NULL);
	ok(d.status == 0 && !d.is_webhook, "headers: GET /metrics passes");

	head(&d, ENDPOINT_WEBHOOK, "POST", "101", NULL, "text/plain");
	ok(d.status == 413 && strstr(d.message, "101") && strstr(d.message, "100"),
	   "headers: size before type, message names both (%s)", d.message);
	head(&d, ENDPOINT_WEBHOOK, "POST", "100", NULL, "application/json");
	ok(d.status == 0 && d.is_webhook && !d.check_type_later, "headers: exactly the limit passes");
	head(&d, ENDPOINT_WEBHOOK, "POST", "100", NULL, "text/plain");
	is_int(d.status, 415, "headers: bad type with a known length 415 at once");
	head(&d, ENDPOINT_WEBHOOK, "POST", NULL, "chunked", "text/plain");
	ok(d.status == 0 && d.check_type_later, "headers: chunked defers the type check");
	head(&d, ENDPOINT_WEBHOOK, "POST", "99999999999999999999999", NULL, "application/json");
	is_int(d.status, 0, "headers: unparsable length left to the HTTP layer");
	head(&d, ENDPOINT_WEBHOOK, "POST", NULL, NULL, NULL);
	is_int(d.status, 415, "headers: missing Content-Type 415");
	ok(!d.close, "headers: an ordinary refusal keeps the connection");
}

static void
test_stripe_route(void)
{
	struct head_decision d;
	struct request_head  h = {.ep = ENDPOINT_STRIPE,
							  .method = "POST",
							  .content_length = "10",
							  .content_type = "application/json",
							  .max_body = 100,
							  .content_lengths = 1};

	decide_headers(&h, &d);
	ok(d.status == 404 && strstr(d.message, "Stripe secret") != NULL && !d.is_webhook,
	   "stripe route: 404 until a Stripe secret is configured (%s)", d.message);
	h.method = "GET";
	decide_headers(&h, &d);
	is_int(d.status, 404, "stripe route: unconfigured, even the method is not looked at");
	h.stripe_configured = true;
	decide_headers(&h, &d);
	ok(d.status == 405 && strcmp(d.allow, "POST") == 0, "stripe route: GET 405 Allow POST");
	h.method = "POST";
	decide_headers(&h, &d);
	ok(d.status == 0 && d.is_webhook, "stripe route: POST read as a webhook");
	h.content_length = "101";
	decide_headers(&h, &d);
	is_int(d.status, 413, "stripe route: size checked");
	h.content_length = "10";
	h.content_type = "application/x-www-form-urlencoded";
	decide_headers(&h, &d);
	is_int(d.status, 415, "stripe route: content type checked");
	h.content_type = "application/json; charset=utf-8";
	h.content_lengths = 2;
	decide_headers(&h, &d);
	ok(d.status == 400 && d.close, "stripe route: framing checked");
}

static void
framing(struct head_decision *d, enum endpoint ep, const char *method, int n, int m)
{
	struct request_head h = {.ep = ep,
							 .method = method,
							 .content_length = n > 0 ? "10" : NULL,
							 .transfer_encoding = m > 0 ? "chunked" : NULL,
							 .content_type = "application/json",
							 .max_body = 100,
							 .stripe_configured = true,
							 .content_lengths = n,
							 .transfer_encodings = m};

	decide_headers(&h, d);
}

static void
test_framing(void)
{
	struct head_decision d;

	framing(&d, ENDPOINT_WEBHOOK, "POST", 2, 0);
	ok(d.status == 400 && d.close && strcmp(d.message, "more than one Content-Length header") == 0,
	   "framing: two Content-Length headers 400, closing (%s)", d.message);
	framing(&d, ENDPOINT_WEBHOOK, "POST", 1, 1);
	ok(d.status == 400 && d.close &&
		   strcmp(d.message, "Content-Length together with Transfer-Encoding") == 0,
	   "framing: Content-Length with Transfer-Encoding 400, closing (%s)", d.message);
	framing(&d, ENDPOINT_API_WEBHOOK, "POST", 0, 2);
	ok(d.status == 400 && d.close &&
		   strcmp(d.message, "more than one Transfer-Encoding header") == 0,
	   "framing: two Transfer-Encoding headers 400 (%s)", d.message);
	framing(&d, ENDPOINT_WEBHOOK, "POST", 3, 2);
	ok(d.status == 400 && strstr(d.message, "Content-Length") != NULL,
	   "framing: everything at once is still one 400");
	framing(&d, ENDPOINT_READYZ, "GET", 1, 1);
	ok(d.status == 400 && d.close, "framing: a probe with ambiguous framing 400 too");
	framing(&d, ENDPOINT_OTHER, "POST", 2, 0);
	is_int(d.status, 404, "framing: the route is decided first");
	framing(&d, ENDPOINT_WEBHOOK, "GET", 2, 0);
	is_int(d.status, 405, "framing: then the method");
	framing(&d, ENDPOINT_WEBHOOK, "POST", 1, 0);
	ok(d.status == 0 && !d.close, "framing: one Content-Length passes");
	framing(&d, ENDPOINT_WEBHOOK, "POST", 0, 1);
	ok(d.status == 0 && d.check_type_later, "framing: one Transfer-Encoding passes");
	framing(&d, ENDPOINT_HEALTHZ, "GET", 0, 0);
	ok(d.status == 0 && !d.is_webhook, "framing: a probe without a body passes");

	/* codings other than chunked: the end of the body is unknown */
	{
		static const char *const refused[] = {"gzip",     "gzip, chunked", "chunked, gzip",
											  "chunkedx", "identity",      ""};
		static const char *const accepted[] = {"chunked", "Chunked", " CHUNKED\t"};

		for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
		{
			head(&d, ENDPOINT_WEBHOOK, "POST", NULL, refused[i], "application/json");
			ok(d.status == 400 && d.close &&
				   strcmp(d.message, "header Transfer-Encoding must be chunked") == 0,
			   "framing: Transfer-Encoding \"%s\" 400, closing (%s)", refused[i], d.message);
		}
		for (size_t i = 0; i < sizeof accepted / sizeof accepted[0]; i++)
		{
			head(&d, ENDPOINT_WEBHOOK, "POST", NULL, accepted[i], "application/json");
			ok(d.status == 0 && d.check_type_later, "framing: Transfer-Encoding \"%s\" passes",
			   accepted[i]);
		}
		head(&d, ENDPOINT_READYZ, "GET", NULL, "gzip", NULL);
		ok(d.status == 400 && d.close, "framing: a probe with Transfer-Encoding gzip 400 too");
	}
}

int
main(void)
{
	test_endpoints();
	test_decide_headers();
	test_framing();
	test_stripe_route();
	test_content_type();
	test_parse_body();
	test_duplicate_keys();
	return done_testing();
}
