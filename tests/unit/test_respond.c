/*
 * test_respond.c - content types, the SQLSTATE to HTTP mapping for every
 * class the listener distinguishes, and the JSON bodies.
 */
#include "respond.h"
#include "tap.h"

#include <stdlib.h>

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
expect(const char *sqlstate, unsigned int status, bool retry, bool retry_after)
{
	struct sqlstate_action a = sqlstate_to_http(sqlstate);

	ok(a.http_status == status && a.retry == retry && a.retry_after == retry_after,
	   "sqlstate %s -> %u%s%s (got %u%s%s)", sqlstate ? sqlstate : "(none)", status,
	   retry ? " retry" : "", retry_after ? " Retry-After" : "", a.http_status,
	   a.retry ? " retry" : "", a.retry_after ? " Retry-After" : "");
}

static void
test_sqlstate(void)
{
	/* data exceptions: the client sent something invalid */
	expect("22023", 400, false, false);
	expect("22P02", 400, false, false);
	expect("22P05", 400, false, false);
	expect("22001", 400, false, false);
	expect("22000", 400, false, false);
	/* unknown job */
	expect("P0002", 404, false, false);
	expect("P0001", 500, false, false);
	/* refused transition */
	expect("55000", 409, false, false);
	/* retried, then 503 */
	expect("40001", 503, true, true);
	expect("40P01", 503, true, true);
	expect("40002", 500, false, false);
	/* transient server-side conditions */
	expect("08006", 503, false, true);
	expect("08001", 503, false, true);
	expect("08000", 503, false, true);
	expect("57P01", 503, false, true);
	expect("57P02", 503, false, true);
	expect("57P03", 503, false, true);
	expect("57014", 503, false, true);
	expect("55P03", 503, false, true);
	expect("53300", 503, false, true);
	expect("25006", 503, false, true);
	/* no SQLSTATE: the connection failed */
	expect(NULL, 503, false, true);
	expect("", 503, false, true);
	/* everything else hides its detail behind a 500 */
	expect("42883", 500, false, false);
	expect("42501", 500, false, false);
	expect("XX000", 500, false, false);
	/* the delivery binding (db.c keeps it only for the binding's message) */
	expect("23505", 422, false, false);
	expect("23514", 500, false, false);
	expect("23503", 500, false, false);
	expect("55006", 500, false, false);
}

static void
expect_stripe(const char *sqlstate, unsigned int status, bool retry, bool retry_after)
{
	struct sqlstate_action a = stripe_sqlstate_to_http(sqlstate);

	ok(a.http_status == status && a.retry == retry && a.retry_after == retry_after,
	   "stripe sqlstate %s -> %u (got %u)", sqlstate ? sqlstate : "(none)", status, a.http_status);
}

static void
test_stripe_sqlstate(void)
{
	expect_stripe("22023", 422, false, false); /* no agent reference */
	expect_stripe("22P02", 400, false, false); /* a reference that is not a uuid */
	expect_stripe("P0002", 404, false, false); /* unknown agent */
	expect_stripe("22001", 400, false, false);
	expect_stripe("40001", 503, true, true);
	expect_stripe("57P01", 503, false, true);
	expect_stripe(NULL, 503, false, true);
	expect_stripe("42501", 500, false, false);
}

static void
test_bodies(void)
{
	char   buf[32];
	char  *body;
	cJSON *obj;
	char   err[160];

	is_str(detail_current_status("current status: running", buf, sizeof buf), "running",
		   "detail: status parsed");
	is_str(detail_current_status("current status: failed.", buf, sizeof buf), "failed",
		   "detail: trailing period dropped");
	ok(detail_current_status("status: running", buf, sizeof buf) == NULL,
	   "detail: other wording gives NULL");
	ok(detail_current_status(NULL, buf, sizeof buf) == NULL, "detail: missing gives NULL");
	ok(detail_current_status("current status: ", buf, sizeof buf) == NULL,
	   "detail: empty status gives NULL");

	body = json_error_body("header \"X\" is\nbad");
	is_str(body, "{\"error\":\"header \\\"X\\\" is\\nbad\"}", "error body escapes its message");
	cJSON_free(body);

	body = json_conflict_body("refused", "5f0c", "running", NULL);
	is_str(body, "{\"error\":\"refused\",\"job_id\":\"5f0c\",\"status\":\"running\"}",
		   "conflict body");
	cJSON_free(body);
	body = json_conflict_body("refused", NULL, NULL, NULL);
	is_str(body, "{\"error\":\"refused\",\"job_id\":null,\"status\":null}",
		   "conflict body with unknowns");
	cJSON_free(body);
	body = json_conflict_body("job 5f0c belongs to workflow run 4242, not 4243", "5f0c",
							  "provisioning", "4242");
	is_str(body,
		   "{\"error\":\"job 5f0c belongs to workflow run 4242, not 4243\",\"job_id\":\"5f0c\","
		   "\"status\":\"provisioning\",\"workflow_run_id\":4242}",
		   "conflict body with the owner run as a number");
	cJSON_free(body);
	body = json_conflict_body("refused", "5f0c", "running", "9223372036854775807");
	ok(body != NULL && strstr(body, "\"workflow_run_id\":9223372036854775807}") != NULL,
	   "conflict body: a run id past 2^53 is printed exactly (%s)", body);
	cJSON_free(body);

	{
		const char *text = "{\"job_id\":\"abc\",\"status\":\"running\"}\n";

		obj = parse_callback_body(text, strlen(text), err, sizeof err);
	}
	ok(obj != NULL, "callback body: object parses");
	is_str(json_job_id(obj, buf, sizeof buf), "abc", "callback body: job_id read");
	ok(!result_is_duplicate(obj), "callback body: not a duplicate");
	cJSON_Delete(obj);

	obj = parse_callback_body("{\"job_id\":7,\"duplicate\":true}", 29, err, sizeof err);
	ok(obj != NULL && json_job_id(obj, buf, sizeof buf) == NULL,
	   "callback body: numeric job_id is not a string");
	ok(result_is_duplicate(obj), "result: duplicate true detected");
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
test_run_fencing(void)
{
	char buf[32];

	is_str(hint_workflow_run_id("workflow_run_id: 4242", buf, sizeof buf), "4242",
		   "hint: run id read");
	is_str(hint_workflow_run_id("workflow_run_id: 1", buf, sizeof buf), "1", "hint: run id 1");
	is_str(hint_workflow_run_id("workflow_run_id: 9223372036854775807", buf, sizeof buf),
		   "9223372036854775807", "hint: the largest bigint");
	ok(hint_workflow_run_id("workflow_run_id: 9223372036854775808", buf, sizeof buf) == NULL,
	   "hint: past bigint omitted");
	ok(hint_workflow_run_id("workflow_run_id: 12345678901234567890", buf, sizeof buf) == NULL,
	   "hint: twenty digits omitted");
	ok(hint_workflow_run_id("workflow_run_id: 0", buf, sizeof buf) == NULL, "hint: zero omitted");
	ok(hint_workflow_run_id("workflow_run_id: 042", buf, sizeof buf) == NULL,
	   "hint: leading zero omitted (not a JSON number)");
	ok(hint_workflow_run_id("workflow_run_id: -5", buf, sizeof buf) == NULL,
	   "hint: negative omitted");
	ok(hint_workflow_run_id("workflow_run_id: +5", buf, sizeof buf) == NULL, "hint: sign omitted");
	ok(hint_workflow_run_id("workflow_run_id: 1e5", buf, sizeof buf) == NULL,
	   "hint: exponent omitted");
	ok(hint_workflow_run_id("workflow_run_id: 5.0", buf, sizeof buf) == NULL,
	   "hint: fraction omitted");
	ok(hint_workflow_run_id("workflow_run_id: 5 ", buf, sizeof buf) == NULL,
	   "hint: trailing space omitted");
	ok(hint_workflow_run_id("workflow_run_id: 5, \"x\": 1", buf, sizeof buf) == NULL,
	   "hint: trailing JSON omitted");
	ok(hint_workflow_run_id("workflow_run_id: 5\n", buf, sizeof buf) == NULL,
	   "hint: trailing newline omitted");
	ok(hint_workflow_run_id("workflow_run_id: ", buf, sizeof buf) == NULL,
	   "hint: no digits omitted");
	ok(hint_workflow_run_id("workflow_run_id:5", buf, sizeof buf) == NULL,
	   "hint: other spacing omitted");
	ok(hint_workflow_run_id("Workflow_run_id: 5", buf, sizeof buf) == NULL,
	   "hint: other case omitted");
	ok(hint_workflow_run_id("retry later; workflow_run_id: 5", buf, sizeof buf) == NULL,
	   "hint: other wording omitted");
	ok(hint_workflow_run_id(NULL, buf, sizeof buf) == NULL, "hint: missing omitted");
	ok(hint_workflow_run_id("workflow_run_id: 4242", buf, 4) == NULL,
	   "hint: a buffer too small omits it");
}

static void
test_delivery_conflict(void)
{
	char *body;

	ok(is_delivery_conflict("delivery id \"d-1\" was already used for another callback", "d-1"),
	   "23505: the delivery binding's message");
	ok(is_delivery_conflict("delivery id \"a\"b\" was already used for another callback", "a\"b"),
	   "23505: an id with a quote");
	ok(!is_delivery_conflict("delivery id \"d-2\" was already used for another callback", "d-1"),
	   "23505: another delivery id is not this one");
	ok(!is_delivery_conflict("delivery id \"d-1\" was already used for another callback", NULL),
	   "23505: without a delivery id it cannot be the binding");
	ok(!is_delivery_conflict("delivery id \"d-1\" was already used for another callback.", "d-1"),
	   "23505: other wording");
	ok(!is_delivery_conflict("delivery id \"d-1\"", "d-1"), "23505: truncated message");
	ok(!is_delivery_conflict(
		   "duplicate key value violates unique constraint \"callback_deliveries_pkey\"", "d-1"),
	   "23505: an ordinary unique violation");
	ok(!is_delivery_conflict(NULL, "d-1"), "23505: no message");

	body = json_delivery_conflict_body("delivery id \"d-1\" was already used for another callback",
									   "d-1", "The payload differs from the one first delivered.");
	is_str(body,
		   "{\"error\":\"delivery id \\\"d-1\\\" was already used for another callback\","
		   "\"delivery_id\":\"d-1\",\"detail\":\"The payload differs from the one first "
		   "delivered.\"}",
		   "422 body names the delivery id");
	cJSON_free(body);
	body = json_delivery_conflict_body("m", "d-1", NULL);
	is_str(body, "{\"error\":\"m\",\"delivery_id\":\"d-1\"}", "422 body without a detail");
	cJSON_free(body);
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

/* A request head with n Content-Length and m Transfer-Encoding headers. */
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
}

int
main(void)
{
	test_decide_headers();
	test_framing();
	test_stripe_route();
	test_stripe_sqlstate();
	test_content_type();
	test_sqlstate();
	test_bodies();
	test_duplicate_keys();
	test_run_fencing();
	test_delivery_conflict();
	return done_testing();
}
