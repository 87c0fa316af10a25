/*
 * fuzz_respond.c - what the listener answers after a database error: the
 * SQLSTATE -> HTTP mapping, the current status taken from a 55000 DETAIL,
 * the owner run taken from its HINT, the delivery binding's 23505, and the
 * JSON error, 409 and 422 bodies.
 *
 * Input: sqlstate '\n' detail '\n' message '\n' job_id '\n' hint '\n' then
 * bytes whose first gives the status buffer size.  An absent field is NULL
 * (a libpq field that is not set); job_id doubles as the delivery id.
 * Properties: the mapping gives one of the statuses SPEC lists, retries only
 * serialization failures and deadlocks, and 503 always with Retry-After; the
 * DETAIL status is a bounded token from the DETAIL; the run id is the
 * HINT's plain positive 64-bit number or nothing; a delivery conflict is
 * recognized only in the exact message naming that delivery id; every body
 * is a JSON object whose members read back exactly as given (null where
 * NULL was given).
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
	const char            *hint;
	struct sqlstate_action a;
	char                   statusbuf[256];
	char                   runbuf[32];
	size_t                 buflen;
	const char            *status;
	const char            *run_id;
	char                  *text;
	cJSON                 *obj;

	fuzz_split(data, size, 5, &f);
	sqlstate = f.str[0];
	detail = f.str[1];
	message = f.str[2];
	job_id = f.str[3];
	hint = f.str[4];
	buflen = f.raw_len > 0 ? f.raw[0] : sizeof statusbuf;

	a = sqlstate_to_http(sqlstate);
	fuzz_check(a.http_status == 400 || a.http_status == 404 || a.http_status == 409 ||
			   a.http_status == 422 || a.http_status == 500 || a.http_status == 503);
	fuzz_check((a.http_status == 422) == (sqlstate != NULL && strcmp(sqlstate, "23505") == 0));
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

	memset(runbuf, 'x', sizeof runbuf);
	run_id = hint_workflow_run_id(hint, runbuf, sizeof runbuf);
	if (run_id != NULL)
	{
		size_t n = strlen(run_id);

		fuzz_check(run_id == runbuf && n >= 1 && n <= 19 && run_id[0] != '0');
		fuzz_check(strspn(run_id, "0123456789") == n);
		fuzz_check(n < 19 || strcmp(run_id, "9223372036854775807") <= 0);
		fuzz_check(strncmp(hint, "workflow_run_id: ", 17) == 0 && strcmp(hint + 17, run_id) == 0);
	}
	else if (hint != NULL && strncmp(hint, "workflow_run_id: ", 17) == 0)
	{
		const char *p = hint + 17;
		size_t      n = strlen(p);

		/* refused only when not a plain positive int64 */
		fuzz_check(n == 0 || n > 19 || p[0] == '0' || strspn(p, "0123456789") != n ||
				   (n == 19 && strcmp(p, "9223372036854775807") > 0));
	}

	text = json_conflict_body(message, job_id, status, run_id);
	fuzz_check(text != NULL);
	obj = cJSON_Parse(text);
	fuzz_check(cJSON_IsObject(obj) && cJSON_GetArraySize(obj) == (run_id != NULL ? 4 : 3));
	check_member(obj, "error", message);
	check_member(obj, "job_id", job_id);
	check_member(obj, "status", status);
	if (run_id != NULL)
	{
		char expect[64];

		fuzz_check(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(obj, "workflow_run_id")));
		/* printed exactly, not through a double */
		snprintf(expect, sizeof expect, "\"workflow_run_id\":%s}", run_id);
		fuzz_check(strlen(text) >= strlen(expect) &&
				   strcmp(text + strlen(text) - strlen(expect), expect) == 0);
	}
	cJSON_Delete(obj);
	cJSON_free(text);

	/* recognized exactly when the message is the one naming this delivery id */
	{
		bool same = false;

		if (message != NULL && job_id != NULL)
		{
			size_t n = strlen(job_id) + 64;
			char  *expect = malloc(n);

			snprintf(expect, n, "delivery id \"%s\" was already used for another callback", job_id);
			same = strcmp(message, expect) == 0;
			free(expect);
		}
		fuzz_check(is_delivery_conflict(message, job_id) == same);
	}

	text = json_delivery_conflict_body(message, job_id, detail);
	fuzz_check(text != NULL);
	obj = cJSON_Parse(text);
	fuzz_check(cJSON_IsObject(obj) && cJSON_GetArraySize(obj) == (detail != NULL ? 3 : 2));
	check_member(obj, "error", message);
	check_member(obj, "delivery_id", job_id);
	if (detail != NULL)
		check_member(obj, "detail", detail);
	cJSON_Delete(obj);
	cJSON_free(text);

	fuzz_free(&f);
	return 0;
}
