/*
 * test_respond.c - the SQLSTATE to HTTP mapping for every class the
 * listener distinguishes, the JSON bodies, and every outcome's answer
 * (status, body, Retry-After, log level, error metric).
 */
#include "respond.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>

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
	char  buf[32];
	char *body;

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

/* A request head with n Content-Length and m Transfer-Encoding headers. */
/* One answer_outcome call, checked whole; the body compared exactly. */
static void
expect_answer(const char *name, const struct outcome *o, const struct answer_context *ctx,
			  unsigned int status, const char *body, unsigned int retry_after, enum answer_log log,
			  bool db_error)
{
	struct answer a;

	answer_outcome(o, ctx, &a);
	ok(a.status == status && a.retry_after == retry_after && a.log == log && a.db_error == db_error,
	   "answer: %s -> %u Retry-After %u log %d db_error %d (got %u, %u, %d, %d)", name, status,
	   retry_after, (int) log, (int) db_error, a.status, a.retry_after, (int) a.log,
	   (int) a.db_error);
	is_str(a.body, body, "answer: %s body", name);
	cJSON_free(a.body);
}

static struct outcome
error_of(const char *sqlstate, const char *message, const char *detail, const char *hint)
{
	struct outcome o = {.kind = OUTCOME_ERROR};

	snprintf(o.sqlstate, sizeof o.sqlstate, "%s", sqlstate);
	o.message = (char *) message;
	o.detail = (char *) detail;
	o.hint = (char *) hint;
	return o;
}

static void
test_outcomes(void)
{
	static const char busy_db[] = "{\"error\":\"database temporarily unavailable; retry later\"}";
	static const char internal[] = "{\"error\":\"internal error\"}";
	static const char binding[] = "delivery id \"d-1\" was already used for another callback";
	struct answer_context cb = {.stripe = false, .delivery_id = "d-1", .job_id = "5f0c"};
	struct answer_context cb_bare = {.stripe = false, .delivery_id = NULL, .job_id = NULL};
	struct answer_context stripe = {.stripe = true, .delivery_id = NULL, .job_id = NULL};
	struct outcome        o = {.kind = OUTCOME_RESULT};

	/* a result is passed through byte for byte, as the server printed it */
	o.text = "{\"action\": \"status\", \"job_id\": \"5f0c\", \"duplicate\": false}";
	expect_answer("result", &o, &cb, 200, o.text, 0, ANSWER_LOG_NONE, false);
	expect_answer("Stripe result", &o, &stripe, 200, o.text, 0, ANSWER_LOG_NONE, false);

	/* nothing reached the database, or what it did is unknown */
	o = (struct outcome){.kind = OUTCOME_LOST};
	expect_answer("connection lost", &o, &cb, 503,
				  "{\"error\":\"database connection lost; retry later\"}", 1, ANSWER_LOG_NONE,
				  false);
	o.kind = OUTCOME_NO_CONNECTION;
	expect_answer("no connection", &o, &cb, 503,
				  "{\"error\":\"database unavailable; retry later\"}", 2, ANSWER_LOG_NONE, false);
	o.kind = OUTCOME_POOL_TIMEOUT;
	expect_answer("pool timeout", &o, &cb, 503,
				  "{\"error\":\"no database connection became free in time; retry later\"}", 1,
				  ANSWER_LOG_NONE, false);
	o.kind = OUTCOME_BUSY;
	expect_answer("busy", &o, &cb, 503,
				  "{\"error\":\"server is busy or shutting down; retry later\"}", 1,
				  ANSWER_LOG_NONE, false);
	o.kind = OUTCOME_NO_RESULT;
	expect_answer("no result", &o, &cb, 500, internal, 0, ANSWER_LOG_NONE, false);
	o.kind = OUTCOME_NONE;
	expect_answer("no outcome", &o, &cb, 500, internal, 0, ANSWER_LOG_NONE, false);

	/* /readyz */
	o.kind = OUTCOME_READY;
	expect_answer("ready", &o, &cb_bare, 200, "{\"status\":\"ready\"}", 0, ANSWER_LOG_NONE, false);
	o.kind = OUTCOME_NOT_READY;
	o.text = "database unreachable";
	expect_answer("not ready", &o, &cb_bare, 503, "{\"error\":\"database unreachable\"}", 1,
				  ANSWER_LOG_NONE, false);
	o.text = NULL;
	o.kind = OUTCOME_SHUTTING_DOWN;
	expect_answer("shutting down", &o, &cb_bare, 503, "{\"error\":\"shutting down\"}", 1,
				  ANSWER_LOG_NONE, false);

	/* class 22, data exceptions: the sender's mistake, its message shown */
	o = error_of("22023", "status \"x\" is not valid", NULL, NULL);
	expect_answer("22023", &o, &cb, 400, "{\"error\":\"status \\\"x\\\" is not valid\"}", 0,
				  ANSWER_LOG_NONE, false);
	o = error_of("22P02", "bad uuid", NULL, NULL);
	expect_answer("22P02", &o, &cb, 400, "{\"error\":\"bad uuid\"}", 0, ANSWER_LOG_NONE, false);
	expect_answer("Stripe 22P02", &o, &stripe, 400, "{\"error\":\"bad uuid\"}", 0, ANSWER_LOG_NONE,
				  false);
	o = error_of("22023", "event names no agent", NULL, NULL);
	expect_answer("Stripe 22023", &o, &stripe, 422, "{\"error\":\"event names no agent\"}", 0,
				  ANSWER_LOG_NONE, false);
	o = error_of("22001", NULL, NULL, NULL);
	expect_answer("22001 without a message", &o, &cb, 400, "{\"error\":\"database error\"}", 0,
				  ANSWER_LOG_NONE, false);

	/* P0002: unknown job or agent */
	o = error_of("P0002", "job 5f0c does not exist", NULL, NULL);
	expect_answer("P0002", &o, &cb, 404, "{\"error\":\"job 5f0c does not exist\"}", 0,
				  ANSWER_LOG_NONE, false);
	expect_answer("Stripe P0002", &o, &stripe, 404, "{\"error\":\"job 5f0c does not exist\"}", 0,
				  ANSWER_LOG_NONE, false);

	/* 55000: a refused transition, with the payload's job id */
	o = error_of("55000", "refused", "current status: running", NULL);
	expect_answer("55000", &o, &cb, 409,
				  "{\"error\":\"refused\",\"job_id\":\"5f0c\",\"status\":\"running\"}", 0,
				  ANSWER_LOG_NONE, false);
	expect_answer("55000 without a job id", &o, &cb_bare, 409,
				  "{\"error\":\"refused\",\"job_id\":null,\"status\":\"running\"}", 0,
				  ANSWER_LOG_NONE, false);
	o = error_of("55000", "job 5f0c belongs to workflow run 4242, not 4243",
				 "current status: provisioning", "workflow_run_id: 4242");
	expect_answer("55000 run fencing", &o, &cb, 409,
				  "{\"error\":\"job 5f0c belongs to workflow run 4242, not 4243\",\"job_id\":"
				  "\"5f0c\",\"status\":\"provisioning\",\"workflow_run_id\":4242}",
				  0, ANSWER_LOG_NONE, false);
	o = error_of("55000", "refused", "other", "workflow_run_id: 04");
	expect_answer("55000 odd detail and hint", &o, &cb, 409,
				  "{\"error\":\"refused\",\"job_id\":\"5f0c\",\"status\":null}", 0, ANSWER_LOG_NONE,
				  false);

	/* 23505: only the delivery binding is the sender's; any other is ours */
	o = error_of("23505", binding, "The payload differs.", NULL);
	expect_answer("23505 binding", &o, &cb, 422,
				  "{\"error\":\"delivery id \\\"d-1\\\" was already used for another "
				  "callback\",\"delivery_id\":\"d-1\",\"detail\":\"The payload differs.\"}",
				  0, ANSWER_LOG_NONE, false);
	expect_answer("23505 binding of another delivery", &o, &cb_bare, 500, internal, 0,
				  ANSWER_LOG_ERROR, true);
	o = error_of("23505", "duplicate key value violates unique constraint \"x\"", NULL, NULL);
	expect_answer("23505 other constraint", &o, &cb, 500, internal, 0, ANSWER_LOG_ERROR, true);
	expect_answer("Stripe 23505", &o, &stripe, 422,
				  "{\"error\":\"duplicate key value violates unique constraint \\\"x\\\"\"}", 0,
				  ANSWER_LOG_NONE, false);

	/* class 40 after the last attempt */
	o = error_of("40001", "could not serialize", NULL, NULL);
	expect_answer("40001", &o, &cb, 503,
				  "{\"error\":\"database conflict persisted after retries; retry later\"}", 1,
				  ANSWER_LOG_WARN, true);
	o = error_of("40P01", "deadlock detected", NULL, NULL);
	expect_answer("40P01", &o, &stripe, 503,
				  "{\"error\":\"database conflict persisted after retries; retry later\"}", 1,
				  ANSWER_LOG_WARN, true);

	/* transient server-side conditions: 503 with Retry-After, logged as warnings */
	{
		static const char *const transient[] = {"08006", "08001", "08000", "57P01", "57P02",
												"57P03", "57014", "55P03", "53300", "25006"};

		for (size_t i = 0; i < sizeof transient / sizeof transient[0]; i++)
		{
			o = error_of(transient[i], "m", NULL, NULL);
			expect_answer(transient[i], &o, &cb, 503, busy_db, 1, ANSWER_LOG_WARN, true);
		}
	}
	o = error_of("", "m", NULL, NULL);
	expect_answer("no SQLSTATE", &o, &cb, 503, busy_db, 1, ANSWER_LOG_WARN, true);

	/* everything else: a 500 that shows nothing of the server's message */
	{
		static const char *const hidden[] = {"P0001", "40002", "42883", "42501",
											 "XX000", "23514", "23503", "55006"};

		for (size_t i = 0; i < sizeof hidden / sizeof hidden[0]; i++)
		{
			o = error_of(hidden[i], "secret detail", NULL, NULL);
			expect_answer(hidden[i], &o, &cb, 500, internal, 0, ANSWER_LOG_ERROR, true);
			expect_answer(hidden[i], &o, &stripe, 500, internal, 0, ANSWER_LOG_ERROR, true);
		}
	}
	ok(sqlstate_is_serialization_failure("40001") && sqlstate_is_serialization_failure("40P01") &&
		   !sqlstate_is_serialization_failure("40002") && !sqlstate_is_serialization_failure(NULL),
	   "serialization failures: 40001 and 40P01 only");
}

int
main(void)
{
	test_outcomes();
	test_stripe_sqlstate();
	test_sqlstate();
	test_bodies();
	test_run_fencing();
	test_delivery_conflict();
	return done_testing();
}
