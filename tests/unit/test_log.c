/*
 * test_log.c - request log lines in both formats: the fields, escaping of
 * client-chosen values so they cannot forge a line, and valid JSON; libpq's
 * multi-line messages on one line.
 */
#include "log.h"
#include "tap.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <unistd.h>

static void
plain_request(void)
{
	log_request("POST", "/webhooks/github", 200, 0.0125, "d-1", "5f0c-aa", NULL, NULL);
}

static void
stripe_request(void)
{
	log_request("POST", "/webhooks/stripe", 200, 0.02, NULL, "5f0c-aa", "evt_1Q2w3E4r",
				"checkout.session.completed");
}

static void
hostile_request(void)
{
	log_request("POST", "/webhooks/github", 401, 0.001,
				"x\" level=error msg=\"forged\nts=0 level=info", NULL, NULL, NULL);
}

/* Every value at its longest and needing escapes everywhere. */
static void
worst_case_request(void)
{
	char method[201];
	char delivery[201];

	memset(method, 0x01, 200);
	method[200] = '\0';
	memset(delivery, 0xff, 200);
	delivery[200] = '\0';
	log_request(method, method, 200, 3600.25, delivery, "j-1", delivery, method);
}

static void
message(void)
{
	log_warn("cannot connect: %s", "refused");
}

int
main(void)
{
	char   buf[4096];
	cJSON *obj;

	log_set_format(LOG_FORMAT_TEXT);
	tap_capture_stderr(plain_request, buf, sizeof buf);
	ok(strncmp(buf, "ts=", 3) == 0, "text: starts with ts=");
	ok(strstr(buf, " level=info msg=request method=POST path=/webhooks/github status=200 "
				   "duration_s=0.012500 delivery_id=d-1 job_id=5f0c-aa\n") != NULL,
	   "text: every field in order (%s)", buf);
	is_int((long) (strchr(buf, '\n') - buf), (long) strlen(buf) - 1, "text: exactly one line");
	ok(strstr(buf, "event_") == NULL, "text: a callback has no event fields");

	tap_capture_stderr(stripe_request, buf, sizeof buf);
	ok(strstr(buf, " path=/webhooks/stripe status=200 duration_s=0.020000 job_id=5f0c-aa "
				   "event_id=evt_1Q2w3E4r event_type=checkout.session.completed\n") != NULL,
	   "text: a Stripe event's id and type (%s)", buf);

	tap_capture_stderr(hostile_request, buf, sizeof buf);
	is_int((long) (strchr(buf, '\n') - buf), (long) strlen(buf) - 1,
		   "text: newline in a value does not split the line");
	ok(strstr(buf, "delivery_id=\"x\\x22 level=error msg=\\x22forged\\x0ats=0 level=info\"") !=
		   NULL,
	   "text: quotes and newline escaped inside a quoted value (%s)", buf);
	ok(strstr(buf, "job_id") == NULL, "text: absent job id omitted");

	{
		static char big[16384];

		tap_capture_stderr(worst_case_request, big, sizeof big);
		ok(strstr(big, " job_id=j-1 event_id=\"\\xff") != NULL,
		   "text: job_id survives the longest escaped values");
		ok(strstr(big, " event_type=\"\\x01") != NULL && strchr(big, '\n') == big + strlen(big) - 1,
		   "text: so does the last field, event_type");
		ok(strstr(big, " delivery_id=\"\\xff") != NULL, "text: delivery_id present");
	}

	tap_capture_stderr(message, buf, sizeof buf);
	ok(strstr(buf, "level=warning msg=\"cannot connect: refused\"\n") != NULL,
	   "text: message with spaces quoted");

	log_set_format(LOG_FORMAT_JSON);
	tap_capture_stderr(hostile_request, buf, sizeof buf);
	is_int((long) (strchr(buf, '\n') - buf), (long) strlen(buf) - 1, "json: one line");
	obj = cJSON_Parse(buf);
	ok(obj != NULL, "json: line parses");
	is_str(cJSON_GetStringValue(cJSON_GetObjectItem(obj, "delivery_id")),
		   "x\" level=error msg=\"forged\nts=0 level=info", "json: value round-trips");
	is_int((long) cJSON_GetNumberValue(cJSON_GetObjectItem(obj, "status")), 401,
		   "json: status is a number");
	is_str(cJSON_GetStringValue(cJSON_GetObjectItem(obj, "msg")), "request", "json: msg");
	ok(cJSON_GetObjectItem(obj, "job_id") == NULL, "json: absent job id omitted");
	cJSON_Delete(obj);

	tap_capture_stderr(stripe_request, buf, sizeof buf);
	obj = cJSON_Parse(buf);
	is_str(cJSON_GetStringValue(cJSON_GetObjectItem(obj, "event_id")), "evt_1Q2w3E4r",
		   "json: event_id");
	is_str(cJSON_GetStringValue(cJSON_GetObjectItem(obj, "event_type")),
		   "checkout.session.completed", "json: event_type");
	cJSON_Delete(obj);

	tap_capture_stderr(message, buf, sizeof buf);
	obj = cJSON_Parse(buf);
	is_str(cJSON_GetStringValue(cJSON_GetObjectItem(obj, "level")), "warning", "json: level");
	cJSON_Delete(obj);

	/* libpq's message after trying two hosts, as PQerrorMessage returns it */
	is_str(log_one_line("connection to server at \"127.0.0.1\", port 5501 failed: Connection "
						"refused\n\tIs the server running on that host and accepting TCP/IP "
						"connections?\nconnection to server at \"127.0.0.1\", port 5502 failed: "
						"session is read-only\n",
						buf, sizeof buf),
		   "connection to server at \"127.0.0.1\", port 5501 failed: Connection refused; "
		   "connection to server at \"127.0.0.1\", port 5502 failed: session is read-only",
		   "one line: every host's reason, without libpq's hints");
	is_str(log_one_line("could not translate host name \"db\" to address", buf, sizeof buf),
		   "could not translate host name \"db\" to address", "one line: a single line unchanged");
	is_str(log_one_line("a\n\nb\n\n", buf, sizeof buf), "a; b", "one line: empty lines dropped");
	is_str(log_one_line("", buf, sizeof buf), "", "one line: empty message");
	{
		char small[10];

		is_str(log_one_line("abcdefghijkl\nmore\n", small, sizeof small), "abcdefghi",
			   "one line: truncated to the buffer");
		is_str(log_one_line("abc\ndefghijkl\n", small, sizeof small), "abc; defg",
			   "one line: truncated within a later line");
	}
	return done_testing();
}
