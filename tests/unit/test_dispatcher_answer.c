/*
 * test_dispatcher_answer.c - every answer GitHub documents for a workflow
 * dispatch, an installation token and a runs listing, and the decision
 * each one gets: record (with or without the run), send again without
 * return_run_details, renew the App token once, pause for a rate limit
 * (retry-after, x-ratelimit-reset, a minute), retry with capped and
 * jittered backoff until --give-up, or fail the job with GitHub's message.
 */
#include "answer.h"
#include "tap.h"

#include <stdlib.h>

#define NOW 1700000000

static struct api_answer
answer(long status, const char *body)
{
	struct api_answer a = {status, NULL, body, NULL, NULL, NULL};

	return a;
}

static const struct dispatch_call TOKEN_CALL = {true, false, false};
static const struct dispatch_call APP_CALL = {true, true, false};
static const struct dispatch_call APP_RENEWED = {true, true, true};
static const struct dispatch_call PLAIN_CALL = {false, false, false};

static struct dispatch_decision
decide(const struct api_answer *a, const struct dispatch_call *call)
{
	struct dispatch_decision d;

	decide_dispatch(a, call, NOW, &d);
	return d;
}

static void
test_accepted(void)
{
	struct api_answer        a;
	struct dispatch_decision d;

	a = answer(200, "{\"workflow_run_id\":16392147365,\"run_url\":\"https://api.github.com/repos/"
					"o/r/actions/runs/16392147365\",\"html_url\":\"https://github.com/o/r/actions/"
					"runs/16392147365\"}");
	d = decide(&a, &TOKEN_CALL);
	is_int(d.action, DISPATCH_RECORD, "200 with run details: record");
	is_int((long) d.run_id, 16392147365L, "the run id, exactly");
	is_str(d.run_url, "https://github.com/o/r/actions/runs/16392147365", "the html_url");
	is_int((long) d.pause_until, 0, "no pause");

	a = answer(200, "{\"workflow_run_id\":42,\"html_url\":\"javascript:alert(1)\"}");
	d = decide(&a, &TOKEN_CALL);
	is_int(d.action, DISPATCH_RECORD, "a URL that is not http(s): still recorded");
	is_int((long) d.run_id, 42, "with the run id");
	is_str(d.run_url, "", "but not the URL");

	a = answer(200, "{\"workflow_run_id\":42.5,\"html_url\":\"https://github.com/x\"}");
	d = decide(&a, &TOKEN_CALL);
	is_int((long) d.run_id, 0, "a run id that is not an integer is not taken");

	a = answer(200, "not json");
	d = decide(&a, &TOKEN_CALL);
	is_int(d.action, DISPATCH_RECORD, "200 without JSON: accepted all the same, never resent");
	is_int((long) d.run_id, 0, "without a run");

	a = answer(204, "");
	d = decide(&a, &TOKEN_CALL);
	is_int(d.action, DISPATCH_RECORD, "204 (no run details): record without a run");
	is_int((long) d.run_id, 0, "run id unknown");
	is_str(d.run_url, "", "URL unknown");

	a = answer(204, "");
	a.ratelimit_remaining = "0";
	a.ratelimit_reset = "1700000123";
	d = decide(&a, &TOKEN_CALL);
	is_int(d.action, DISPATCH_RECORD, "the last call of the hour is still recorded");
	is_int((long) d.pause_until, 1700000123L, "and pauses until x-ratelimit-reset");
}

static void
test_run_details_refused(void)
{
	struct api_answer        a;
	struct dispatch_decision d;

	a = answer(422, "{\"message\":\"Invalid request.\\n\\n\\\"return_run_details\\\" is not a "
					"permitted key.\",\"documentation_url\":\"https://docs.github.com/\"}");
	d = decide(&a, &TOKEN_CALL);
	is_int(d.action, DISPATCH_RESEND_PLAIN, "422 naming return_run_details: send without it");
	a.status = 400;
	d = decide(&a, &TOKEN_CALL);
	is_int(d.action, DISPATCH_RESEND_PLAIN, "400 naming return_run_details: the same");
	d = decide(&a, &PLAIN_CALL);
	is_int(d.action, DISPATCH_FAIL, "the same answer to a call without it fails the job");
	is_str(d.error,
		   "dispatch: HTTP 400: Invalid request. \"return_run_details\" is not a permitted key.",
		   "GitHub's message, on one line");

	a = answer(422, "{\"message\":\"Unexpected inputs provided: [\\\"agent_id\\\"]\"}");
	d = decide(&a, &TOKEN_CALL);
	is_int(d.action, DISPATCH_FAIL, "another 422: the job fails");
	is_str(d.error, "dispatch: HTTP 422: Unexpected inputs provided: [\"agent_id\"]",
		   "error names the status and the message");
}

static void
test_refused(void)
{
	struct api_answer        a;
	struct dispatch_decision d;

	a = answer(401, "{\"message\":\"Bad credentials\",\"documentation_url\":\"https://docs."
					"github.com/rest\",\"status\":\"401\"}");
	d = decide(&a, &TOKEN_CALL);
	is_int(d.action, DISPATCH_FAIL, "401 with a token: the job fails");
	is_str(d.error, "dispatch: HTTP 401: Bad credentials", "401 error text");
	d = decide(&a, &APP_CALL);
	is_int(d.action, DISPATCH_RENEW_TOKEN, "401 with an App token: renew it at once");
	d = decide(&a, &APP_RENEWED);
	is_int(d.action, DISPATCH_FAIL, "a second 401 after the renewal: the job fails");

	a = answer(404, "{\"message\":\"Not Found\",\"documentation_url\":\"https://docs.github.com/"
					"rest/actions/workflows#create-a-workflow-dispatch-event\"}");
	d = decide(&a, &TOKEN_CALL);
	is_int(d.action, DISPATCH_FAIL, "404: the job fails");
	is_str(d.error, "dispatch: HTTP 404: Not Found", "404 error text");

	a = answer(403, "{\"message\":\"Resource not accessible by integration\"}");
	a.ratelimit_remaining = "4999";
	d = decide(&a, &TOKEN_CALL);
	is_int(d.action, DISPATCH_FAIL, "403 that is no rate limit: the job fails");
	is_str(d.error, "dispatch: HTTP 403: Resource not accessible by integration", "403 text");

	a = answer(410, "<html>\n<body>Gone</body>\n</html>");
	d = decide(&a, &TOKEN_CALL);
	is_str(d.error, "dispatch: HTTP 410: <html> <body>Gone</body> </html>",
		   "a body that is not JSON: its start, on one line");
	a = answer(418, "");
	d = decide(&a, &TOKEN_CALL);
	is_str(d.error, "dispatch: HTTP 418: no message", "an empty body");
	a = answer(301, "");
	d = decide(&a, &TOKEN_CALL);
	is_int(d.action, DISPATCH_FAIL, "a redirect left over after following three: the job fails");
}

static void
test_rate_limits(void)
{
	struct api_answer        a;
	struct dispatch_decision d;

	a = answer(403, "{\"message\":\"API rate limit exceeded for user ID 1.\"}");
	a.ratelimit_remaining = "0";
	a.ratelimit_reset = "1700000900";
	d = decide(&a, &TOKEN_CALL);
	is_int(d.action, DISPATCH_PAUSE, "403 with x-ratelimit-remaining 0: pause, the job kept");
	is_int((long) d.pause_until, 1700000900L, "until x-ratelimit-reset");
	a.status = 429;
	d = decide(&a, &TOKEN_CALL);
	is_int(d.action, DISPATCH_PAUSE, "429 the same");

	a = answer(403, "{\"message\":\"You have exceeded a secondary rate limit.\"}");
	a.retry_after = "30";
	d = decide(&a, &TOKEN_CALL);
	is_int(d.action, DISPATCH_PAUSE, "secondary rate limit with retry-after: pause");
	is_int((long) d.pause_until, NOW + 30L, "for retry-after seconds");
	a.retry_after = NULL;
	d = decide(&a, &TOKEN_CALL);
	is_int(d.action, DISPATCH_PAUSE, "secondary rate limit without headers: pause");
	is_int((long) d.pause_until, NOW + 60L, "for a minute");

	a = answer(429, "");
	d = decide(&a, &TOKEN_CALL);
	is_int(d.action, DISPATCH_PAUSE, "429 without any header: pause");
	is_int((long) d.pause_until, NOW + 60L, "for a minute");

	a = answer(429, "");
	a.ratelimit_remaining = "0";
	a.ratelimit_reset = "1800000000";
	d = decide(&a, &TOKEN_CALL);
	is_int((long) d.pause_until, NOW + 3600L,
		   "a reset far ahead (a wrong clock) is capped at an hour");
	a.ratelimit_reset = "1600000000";
	d = decide(&a, &TOKEN_CALL);
	is_int((long) d.pause_until, NOW + 1L, "a reset in the past: one second");
	a.retry_after = "soon";
	d = decide(&a, &TOKEN_CALL);
	is_int((long) d.pause_until, NOW + 1L, "a retry-after that is no number is ignored");
}

static void
test_transient(void)
{
	struct api_answer        a;
	struct dispatch_decision d;

	a = answer(502, "{\"message\":\"Server Error\"}");
	d = decide(&a, &TOKEN_CALL);
	is_int(d.action, DISPATCH_RETRY, "502: retry");
	is_str(d.error, "HTTP 502: Server Error", "what failed");
	a = answer(500, "");
	d = decide(&a, &APP_CALL);
	is_int(d.action, DISPATCH_RETRY, "500: retry");
	a = answer(0, "");
	a.transport_error = "Operation timed out after 30001 milliseconds with 0 bytes received";
	d = decide(&a, &TOKEN_CALL);
	is_int(d.action, DISPATCH_RETRY, "no answer (timeout): retry");
	is_str(d.error, "Operation timed out after 30001 milliseconds with 0 bytes received",
		   "the transport's error");
}

static void
test_backoff(void)
{
	double at;

	ok(decide_backoff(1, 100, 100, 600, 0, &at), "first failure: retry");
	ok(at == 100.5, "after half a second with no jitter (%g)", at);
	ok(decide_backoff(1, 100, 100, 600, 0.999, &at) && at > 100.99 && at < 101,
	   "after up to a second with the most jitter (%g)", at);
	ok(decide_backoff(3, 100, 110, 600, 0.5, &at) && at == 113,
	   "third: 4 s halved plus half of it jittered (%g)", at);
	ok(decide_backoff(30, 100, 200, 600, 0, &at) && at == 230, "capped at 60 s, halved (%g)", at);
	ok(decide_backoff(30, 100, 690, 600, 0.99, &at) && at == 700,
	   "never after the give-up deadline: the last try falls on it (%g)", at);
	ok(!decide_backoff(5, 100, 700, 600, 0, &at), "at the deadline: give up");
	ok(!decide_backoff(1, 100, 100, 0, 0, &at), "--give-up 0: the first failure fails the job");
}

static void
test_token(void)
{
	struct api_answer     a;
	struct token_decision t;

	a = answer(201, "{\"token\":\"ghs_16C7e42F292c6912E7710c838347Ae178B4a\",\"expires_at\":"
					"\"2023-11-14T23:13:20Z\",\"permissions\":{\"actions\":\"write\"}}");
	decide_token(&a, NOW, &t);
	is_int(t.action, TOKEN_OK, "201 with a token");
	is_str(t.token, "ghs_16C7e42F292c6912E7710c838347Ae178B4a", "the token");
	is_int((long) t.expires_at, 1700003600L, "expires_at as Unix time");
	free(t.token);

	a = answer(201, "{\"token\":\"ghs_x y\",\"expires_at\":\"2023-11-14T23:13:20Z\"}");
	decide_token(&a, NOW, &t);
	is_int(t.action, TOKEN_RETRY, "a token with a space is not used");
	a = answer(201, "{\"token\":\"ghs_x\"}");
	decide_token(&a, NOW, &t);
	is_int(t.action, TOKEN_RETRY, "no expires_at: not used");

	a = answer(401, "{\"message\":\"'Expiration time' claim ('exp') is too far in the future\"}");
	decide_token(&a, NOW, &t);
	is_int(t.action, TOKEN_REFUSED, "401: the App's JWT was refused");
	is_str(t.error, "HTTP 401: 'Expiration time' claim ('exp') is too far in the future",
		   "with GitHub's message");
	a = answer(404, "{\"message\":\"Not Found\"}");
	decide_token(&a, NOW, &t);
	is_int(t.action, TOKEN_REFUSED, "404 (no such installation): refused");
	a = answer(503, "");
	decide_token(&a, NOW, &t);
	is_int(t.action, TOKEN_RETRY, "503: retry later");
	a = answer(429, "");
	a.retry_after = "5";
	decide_token(&a, NOW, &t);
	is_int(t.action, TOKEN_PAUSE, "429: pause");
	is_int((long) t.pause_until, NOW + 5L, "for retry-after");

	ok(!token_needs_renewal(NOW + 301, NOW), "301 s before expiry: still good");
	ok(token_needs_renewal(NOW + 300, NOW), "300 s before expiry: renewed");
	ok(token_needs_renewal(NOW - 1, NOW), "expired: renewed");
}

static void
test_runs(void)
{
	static const char page[] =
		"{\"total_count\":4,\"workflow_runs\":["
		"{\"id\":900,\"name\":\"provision\",\"display_title\":\"provision job "
		"0b6b7f4e-1111-4c1e-9d7c-5a1e0c9b2f41\",\"html_url\":\"https://github.com/o/r/actions/"
		"runs/900\"},"
		"{\"id\":901,\"name\":\"provision\",\"display_title\":\"provision job "
		"9F0B8C36-2A57-4B1E-9D7C-5A1E0C9B2F41\",\"html_url\":\"https://github.com/o/r/actions/"
		"runs/901\"},"
		"{\"id\":800,\"name\":\"provision\",\"display_title\":\"provision job "
		"9f0b8c36-2a57-4b1e-9d7c-5a1e0c9b2f41 (attempt 1)\",\"html_url\":\"https://github.com/"
		"o/r/actions/runs/800\"},"
		"{\"id\":\"x\",\"display_title\":\"9f0b8c36-2a57-4b1e-9d7c-5a1e0c9b2f41\"}]}";
	long long run = 0;
	char      url[512];
	char      err[128];
	int       n;

	is_int(runs_find(page, "9f0b8c36-2a57-4b1e-9d7c-5a1e0c9b2f41", &run, url, sizeof url, &n, err,
					 sizeof err),
		   1, "the job's run is found by its title, in any case");
	is_int((long) run, 800, "the oldest of two runs for one job");
	is_str(url, "https://github.com/o/r/actions/runs/800", "its URL");
	is_int(n, 4, "the page's number of runs");
	is_int(runs_find(page, "00000000-0000-4000-8000-000000000000", &run, url, sizeof url, &n, err,
					 sizeof err),
		   0, "no run for another job");
	is_int(
		runs_find("{\"message\":\"Not Found\"}", "x", &run, url, sizeof url, &n, err, sizeof err),
		-1, "not a runs page");
	is_str(err, "the answer has no workflow_runs array", "says why");
}

static void
test_timestamps(void)
{
	time_t t;
	char   buf[32];

	ok(parse_utc_timestamp("2023-11-14T22:13:20Z", &t) && t == 1700000000, "Z form");
	ok(parse_utc_timestamp("2023-11-14T22:13:20.123Z", &t) && t == 1700000000, "fractions");
	ok(parse_utc_timestamp("2023-11-14T22:13:20+00:00", &t) && t == 1700000000, "+00:00");
	ok(!parse_utc_timestamp("2023-11-14T22:13:20+02:00", &t), "another zone is refused");
	ok(!parse_utc_timestamp("yesterday", &t), "not a time");
	format_utc_timestamp(1700000000, buf, sizeof buf);
	is_str(buf, "2023-11-14T22:13:20Z", "formatted for GitHub's created filter");
}

int
main(void)
{
	test_accepted();
	test_run_details_refused();
	test_refused();
	test_rate_limits();
	test_transient();
	test_backoff();
	test_token();
	test_runs();
	test_timestamps();
	return done_testing();
}
