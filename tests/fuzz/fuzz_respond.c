/*
 * fuzz_respond.c - what the listener answers after a database error: the
 * SQLSTATE -> HTTP mapping, the current status taken from a 55000 DETAIL,
 * and the JSON error and 409 bodies.
 *
 * Input: sqlstate '\n' detail '\n' message '\n' job_id '\n' then bytes whose
 * first gives the status buffer size.  An absent field is NULL (a libpq
 * field that is not set).  Properties: the mapping gives one of the statuses
 * SPEC lists, retries only serialization failures and deadlocks, and 503
 * always with Retry-After; the DETAIL status is a bounded token from the
 * DETAIL; every body is a JSON object whose members read back exactly as
 * given (null where NULL was given).
 */
#include "fuzz.h"
#include "respond.h"

static void
check_member(const cJSON *obj, const char *key, const char *value)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);

	fuzz_check(item != NULL);
	if (value == NULL)
		fuzz_check(cJSON_IsNull(item));
	else
		fuzz_check(cJSON_IsString(item) && strcmp(item->valuestring, value) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_fields     f;
	const char            *sqlstate;
	const char            *detail;
	const char            *message;
	const char            *job_id;
	struct sqlstate_action a;
	char                   statusbuf[256];
	size_t                 buflen;
	const char            *status;
	char                  *text;
	cJSON                 *obj;

	fuzz_split(data, size, 4, &f);
	sqlstate = f.str[0];
	detail = f.str[1];
	message = f.str[2];
	job_id = f.str[3];
	buflen = f.raw_len > 0 ? f.raw[0] : sizeof statusbuf;

	a = sqlstate_to_http(sqlstate);
	fuzz_check(a.http_status == 400 || a.http_status == 404 || a.http_status == 409 ||
			   a.http_status == 500 || a.http_status == 503);
	fuzz_check(!a.retry || a.http_status == 503);
	fuzz_check((a.http_status == 503) == a.retry_after);
	fuzz_check(a.retry == (sqlstate != NULL &&
						   (strcmp(sqlstate, "40001") == 0 || strcmp(sqlstate, "40P01") == 0)));
	if (sqlstate == NULL || strlen(sqlstate) != 5)
		fuzz_check(a.http_status == 503);
	else if (strncmp(sqlstate, "22", 2) == 0)
		fuzz_check(a.http_status == 400);

	memset(statusbuf, 'x', sizeof statusbuf);
	status = detail_current_status(detail, statusbuf, buflen);
	if (status != NULL)
	{
		size_t n = strlen(status);

		fuzz_check(status == statusbuf && n > 0 && n < buflen);
		fuzz_check(strncmp(detail, "current status: ", 16) == 0 &&
				   strncmp(detail + 16, status, n) == 0);
		fuzz_check(strcspn(status, " .\n\r\t") == n);
	}
	/* nothing beyond the buffer handed over was touched */
	fuzz_check(buflen >= sizeof statusbuf || statusbuf[buflen] == 'x');

	if (message != NULL)
	{
		text = json_error_body(message);
		fuzz_check(text != NULL);
		obj = cJSON_Parse(text);
		fuzz_check(cJSON_IsObject(obj) && cJSON_GetArraySize(obj) == 1);
		check_member(obj, "error", message);
		cJSON_Delete(obj);
		cJSON_free(text);
	}

	text = json_conflict_body(message, job_id, status);
	fuzz_check(text != NULL);
	obj = cJSON_Parse(text);
	fuzz_check(cJSON_IsObject(obj) && cJSON_GetArraySize(obj) == 3);
	check_member(obj, "error", message);
	check_member(obj, "job_id", job_id);
	check_member(obj, "status", status);
	cJSON_Delete(obj);
	cJSON_free(text);

	fuzz_free(&f);
	return 0;
}
