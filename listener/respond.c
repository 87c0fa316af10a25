/*
 * respond.c - pure decisions behind each HTTP answer.
 */
#include "respond.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define JSON_MEDIA_TYPE "application/json"

bool
content_type_is_json(const char *content_type)
{
	const char *p = content_type;
	size_t      n = strlen(JSON_MEDIA_TYPE);

	if (p == NULL)
		return false;
	while (*p == ' ' || *p == '\t')
		p++;
	if (strncasecmp(p, JSON_MEDIA_TYPE, n) != 0)
		return false;
	p += n;
	while (*p == ' ' || *p == '\t')
		p++;
	return *p == '\0' || *p == ';';
}

void
decide_headers(const struct request_head *head, struct head_decision *d)
{
	memset(d, 0, sizeof *d);
	switch (head->ep)
	{
		case ENDPOINT_OTHER:
		case ENDPOINT_COUNT:
			d->status = 404;
			snprintf(d->message, sizeof d->message,
					 "unknown path; callbacks go to POST /webhooks/github");
			return;
		case ENDPOINT_STRIPE:
			if (!head->stripe_configured)
			{
				d->status = 404;
				snprintf(d->message, sizeof d->message,
						 "unknown path; Stripe events are accepted once the listener has a Stripe "
						 "secret");
				return;
			}
			/* FALLTHROUGH */
		case ENDPOINT_WEBHOOK:
		case ENDPOINT_API_WEBHOOK:
			if (strcmp(head->method, "POST") != 0)
			{
				d->status = 405;
				d->allow = "POST";
				snprintf(d->message, sizeof d->message, "method not allowed; use POST");
				return;
			}
			d->is_webhook = true;
			break;
		case ENDPOINT_HEALTHZ:
		case ENDPOINT_READYZ:
		case ENDPOINT_METRICS:
			if (strcmp(head->method, "GET") != 0 && strcmp(head->method, "HEAD") != 0)
			{
				d->status = 405;
				d->allow = "GET, HEAD";
				snprintf(d->message, sizeof d->message, "method not allowed; use GET");
				return;
			}
			break;
	}

	/*
	 * Two lengths, or a length and a chunked body, mean two possible ends of
	 * the body: a proxy in front may pick the other one, and the bytes after
	 * the end this server picks would be read as a request of its own.  So
	 * such a request is refused before its body is used, and its connection
	 * closed.
	 */
	if (head->content_lengths > 1 || head->transfer_encodings > 1 ||
		(head->content_lengths > 0 && head->transfer_encodings > 0))
	{
		d->status = 400;
		d->close = true;
		snprintf(d->message, sizeof d->message, "%s",
				 head->content_lengths > 1      ? "more than one Content-Length header"
				 : head->transfer_encodings > 1 ? "more than one Transfer-Encoding header"
												: "Content-Length together with Transfer-Encoding");
		return;
	}
	if (!d->is_webhook)
		return;

	if (head->content_length != NULL)
	{
		char              *end;
		unsigned long long n;

		errno = 0;
		n = strtoull(head->content_length, &end, 10);
		if (errno == 0 && *end == '\0' && n > (unsigned long long) head->max_body)
		{
			d->status = 413;
			snprintf(d->message, sizeof d->message,
					 "request body of %llu bytes exceeds the limit of %ld bytes", n,
					 head->max_body);
			return;
		}
	}
	if (head->transfer_encoding != NULL && head->content_length == NULL)
		d->check_type_later = true;
	else if (!content_type_is_json(head->content_type))
	{
		d->status = 415;
		snprintf(d->message, sizeof d->message, "header Content-Type must be application/json");
	}
}

struct sqlstate_action
sqlstate_to_http(const char *s)
{
	struct sqlstate_action a = {500, false, false};

	if (s == NULL || strlen(s) != 5)
	{
		/* no SQLSTATE: the connection failed, so the outcome is unknown */
		a.http_status = 503;
		a.retry_after = true;
	}
	else if (strncmp(s, "22", 2) == 0)
		a.http_status = 400;
	else if (strcmp(s, "P0002") == 0)
		a.http_status = 404;
	else if (strcmp(s, "55000") == 0)
		a.http_status = 409;
	else if (strcmp(s, "23505") == 0)
		a.http_status = 422;
	else if (strcmp(s, "40001") == 0 || strcmp(s, "40P01") == 0)
	{
		a.http_status = 503;
		a.retry = true;
		a.retry_after = true;
	}

	/*
	 * Connection exceptions, server shutdown or startup, too many
	 * connections, a read-only (standby) server, and statement or lock
	 * timeouts are all conditions that clear up without the client changing
	 * anything.
	 */
	else if (strncmp(s, "08", 2) == 0 || strncmp(s, "53", 2) == 0 || strcmp(s, "57P01") == 0 ||
			 strcmp(s, "57P02") == 0 || strcmp(s, "57P03") == 0 || strcmp(s, "57014") == 0 ||
			 strcmp(s, "55P03") == 0 || strcmp(s, "25006") == 0)
	{
		a.http_status = 503;
		a.retry_after = true;
	}
	return a;
}

struct sqlstate_action
stripe_sqlstate_to_http(const char *s)
{
	if (s != NULL && strcmp(s, "22023") == 0)
	{
		struct sqlstate_action a = {422, false, false};

		return a;
	}
	return sqlstate_to_http(s);
}

const char *
detail_current_status(const char *detail, char *buf, size_t len)
{
	static const char prefix[] = "current status: ";
	const char       *p;
	size_t            n;

	if (detail == NULL || strncmp(detail, prefix, sizeof prefix - 1) != 0)
		return NULL;
	p = detail + sizeof prefix - 1;
	n = strcspn(p, " .\n\r\t");
	if (n == 0 || n >= len)
		return NULL;
	memcpy(buf, p, n);
	buf[n] = '\0';
	return buf;
}

static char *
print_and_free(cJSON *obj)
{
	char *text = cJSON_PrintUnformatted(obj);

	cJSON_Delete(obj);
	return text;
}

char *
json_error_body(const char *message)
{
	cJSON *obj = cJSON_CreateObject();

	if (obj == NULL)
		return NULL;
	if (cJSON_AddStringToObject(obj, "error", message) == NULL)
	{
		cJSON_Delete(obj);
		return NULL;
	}
	return print_and_free(obj);
}

static bool
add_string_or_null(cJSON *obj, const char *key, const char *value)
{
	if (value == NULL)
		return cJSON_AddNullToObject(obj, key) != NULL;
	return cJSON_AddStringToObject(obj, key, value) != NULL;
}

const char *
hint_workflow_run_id(const char *hint, char *buf, size_t len)
{
	static const char prefix[] = "workflow_run_id: ";
	static const char int64_max[] = "9223372036854775807";
	const char       *p;
	size_t            n;

	if (hint == NULL || strncmp(hint, prefix, sizeof prefix - 1) != 0)
		return NULL;
	p = hint + sizeof prefix - 1;
	n = strspn(p, "0123456789");
	if (n == 0 || p[n] != '\0' || p[0] == '0' || n > sizeof int64_max - 1 || n >= len)
		return NULL;
	/* same length: digit strings compare as numbers */
	if (n == sizeof int64_max - 1 && strcmp(p, int64_max) > 0)
		return NULL;
	memcpy(buf, p, n + 1);
	return buf;
}

char *
json_conflict_body(const char *message, const char *job_id, const char *status,
				   const char *workflow_run_id)
{
	cJSON *obj = cJSON_CreateObject();

	if (obj == NULL)
		return NULL;
	if (!add_string_or_null(obj, "error", message) || !add_string_or_null(obj, "job_id", job_id) ||
		!add_string_or_null(obj, "status", status))
	{
		cJSON_Delete(obj);
		return NULL;
	}

	/*
	 * Raw, not a cJSON number: a double would round run ids past 2^53, and
	 * hint_workflow_run_id let only plain digits through.
	 */
	if (workflow_run_id != NULL &&
		cJSON_AddRawToObject(obj, "workflow_run_id", workflow_run_id) == NULL)
	{
		cJSON_Delete(obj);
		return NULL;
	}
	return print_and_free(obj);
}

bool
is_delivery_conflict(const char *message, const char *delivery_id)
{
	static const char before[] = "delivery id \"";
	static const char after[] = "\" was already used for another callback";
	size_t            n;

	if (message == NULL || delivery_id == NULL || strncmp(message, before, sizeof before - 1) != 0)
		return false;
	message += sizeof before - 1;
	n = strlen(delivery_id);
	return strncmp(message, delivery_id, n) == 0 && strcmp(message + n, after) == 0;
}

char *
json_delivery_conflict_body(const char *message, const char *delivery_id, const char *detail)
{
	cJSON *obj = cJSON_CreateObject();

	if (obj == NULL)
		return NULL;
	if (!add_string_or_null(obj, "error", message) ||
		!add_string_or_null(obj, "delivery_id", delivery_id) ||
		(detail != NULL && cJSON_AddStringToObject(obj, "detail", detail) == NULL))
	{
		cJSON_Delete(obj);
		return NULL;
	}
	return print_and_free(obj);
}

static int
compare_keys(const void *a, const void *b)
{
	return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* A key is echoed in the 400 only when it is short, printable ASCII. */
static bool
printable_key(const char *key)
{
	size_t n = strlen(key);

	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char) key[i] < ' ' || (unsigned char) key[i] > '~')
			return false;
	return true;
}

/*
 * cJSON answers the first of two equal keys and jsonb keeps the last, so
 * with a repeated key the listener (the job id in its log and 409 body)
 * and the database would act on different values.  Keys are compared after
 * JSON unescaping, as both parsers do; sorted, so a body of many keys costs
 * n log n, not n^2.
 */
static bool
unique_keys(const cJSON *obj, char *err, size_t errlen)
{
	const char **keys;
	size_t       n = 0;
	const cJSON *item;
	const char  *repeated = NULL;

	for (item = obj->child; item != NULL; item = item->next)
		n++;
	if (n < 2)
		return true;
	keys = malloc(n * sizeof *keys);
	if (keys == NULL)
	{
		snprintf(err, errlen, "request body could not be checked: out of memory");
		return false;
	}
	n = 0;
	for (item = obj->child; item != NULL; item = item->next)
		keys[n++] = item->string;
	qsort(keys, n, sizeof *keys, compare_keys);
	for (size_t i = 1; i < n && repeated == NULL; i++)
		if (strcmp(keys[i - 1], keys[i]) == 0)
			repeated = keys[i];
	if (repeated != NULL)
	{
		if (printable_key(repeated))
			snprintf(err, errlen, "request body repeats the key \"%s\" at the top level", repeated);
		else
			snprintf(err, errlen, "request body repeats a key at the top level");
	}
	free(keys);
	return repeated == NULL;
}

cJSON *
parse_callback_body(const char *body, size_t len, char *err, size_t errlen)
{
	const char *end = NULL;
	cJSON      *obj;

	if (len == 0)
	{
		snprintf(err, errlen, "request body is empty; expected a JSON object");
		return NULL;
	}
	obj = cJSON_ParseWithLengthOpts(body, len, &end, false);
	if (obj == NULL)
	{
		snprintf(err, errlen, "request body is not valid JSON");
		return NULL;
	}
	while (end < body + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
		end++;
	if (end != body + len)
	{
		cJSON_Delete(obj);
		snprintf(err, errlen, "request body is not valid JSON (trailing data after the value)");
		return NULL;
	}
	if (!cJSON_IsObject(obj))
	{
		cJSON_Delete(obj);
		snprintf(err, errlen, "request body must be a JSON object");
		return NULL;
	}
	if (!unique_keys(obj, err, errlen))
	{
		cJSON_Delete(obj);
		return NULL;
	}
	return obj;
}

const char *
json_string_member(const cJSON *obj, const char *key, char *buf, size_t len)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);

	if (!cJSON_IsString(item) || item->valuestring == NULL || len == 0)
		return NULL;
	snprintf(buf, len, "%s", item->valuestring);
	return buf;
}

const char *
json_job_id(const cJSON *obj, char *buf, size_t len)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, "job_id");

	if (!cJSON_IsString(item) || item->valuestring == NULL || strlen(item->valuestring) >= len)
		return NULL;
	strcpy(buf, item->valuestring);
	return buf;
}

bool
result_is_duplicate(const cJSON *result)
{
	return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(result, "duplicate"));
}
