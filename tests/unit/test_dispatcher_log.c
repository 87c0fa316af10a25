/*
 * test_dispatcher_log.c - log_event, the dispatcher's log lines: fields in
 * order in text, numbers as JSON numbers (64-bit run ids exact), strings
 * that merely claim to be numbers quoted, absent fields left out, and
 * values from GitHub escaped so they cannot forge or split a line.
 */
#include "log.h"
#include "tap.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <unistd.h>

static void
dispatch_line(void)
{
	const struct log_field fields[] = {
		{"job_id", "3f0b8c36-2a57-4b1e-9d7c-5a1e0c9b2f41", false},
		{"status", "200", true},
		{"run_id", "9007199254740993", true},
		{"duration_s", "0.250000", true},
		{"attempt", "1", true},
		{"outcome", "run", false},
		{"error", NULL, false},
	};

	log_event("info", "dispatch", fields, 7);
}

static void
hostile_line(void)
{
	const struct log_field fields[] = {
		{"job_id", "j-1", false},
		{"status", "12 OR 1", true},
		{"error", "dispatch: HTTP 422: x\" level=error msg=\"forged\nts=0 level=info", false},
	};

	log_event("error", "dispatch", fields, 3);
}

int
main(void)
{
	char   buf[8192];
	cJSON *obj;

	log_set_format(LOG_FORMAT_TEXT);
	tap_capture_stderr(dispatch_line, buf, sizeof buf);
	ok(strncmp(buf, "ts=", 3) == 0, "text: starts with ts=");
	ok(strstr(buf, " level=info msg=dispatch job_id=3f0b8c36-2a57-4b1e-9d7c-5a1e0c9b2f41 "
				   "status=200 run_id=9007199254740993 duration_s=0.250000 attempt=1 "
				   "outcome=run\n") != NULL,
	   "text: every field in order, the absent one left out (%s)", buf);

	tap_capture_stderr(hostile_line, buf, sizeof buf);
	is_int((long) (strchr(buf, '\n') - buf), (long) strlen(buf) - 1, "text: one line (%s)", buf);
	ok(strstr(buf, "error=\"dispatch: HTTP 422: x\\x22 level=error msg=\\x22forged\\x0ats=0 "
				   "level=info\"") != NULL,
	   "text: the message quoted and escaped");

	log_set_format(LOG_FORMAT_JSON);
	tap_capture_stderr(dispatch_line, buf, sizeof buf);
	obj = cJSON_Parse(buf);
	ok(obj != NULL, "json: one object (%s)", buf);
	ok(strstr(buf, "\"run_id\":9007199254740993") != NULL,
	   "json: a 64-bit id written exactly as a number");
	ok(cJSON_IsNumber(cJSON_GetObjectItem(obj, "status")), "json: status a number");
	ok(cJSON_IsNumber(cJSON_GetObjectItem(obj, "duration_s")), "json: duration a number");
	ok(cJSON_IsString(cJSON_GetObjectItem(obj, "outcome")), "json: outcome a string");
	ok(cJSON_GetObjectItem(obj, "error") == NULL, "json: an absent field is left out");
	is_str(cJSON_GetStringValue(cJSON_GetObjectItem(obj, "msg")), "dispatch", "json: msg");
	cJSON_Delete(obj);

	tap_capture_stderr(hostile_line, buf, sizeof buf);
	obj = cJSON_Parse(buf);
	ok(obj != NULL && strchr(buf, '\n') == buf + strlen(buf) - 1, "json: one valid line");
	is_str(cJSON_GetStringValue(cJSON_GetObjectItem(obj, "status")), "12 OR 1",
		   "json: a \"number\" that is not one is written as a string");
	is_str(cJSON_GetStringValue(cJSON_GetObjectItem(obj, "error")),
		   "dispatch: HTTP 422: x\" level=error msg=\"forged\nts=0 level=info",
		   "json: the message intact inside its string");
	cJSON_Delete(obj);
	return done_testing();
}
