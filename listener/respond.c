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
		case ENDPOINT_WEBHOOK:
		case ENDPOINT_API_WEBHOOK:
			if (strcmp(head->method, "POST") != 0)
			{
				d->status = 405;
				d->allow = "POST";
				snprintf(d->message, sizeof d->message, "method not allowed; use POST");
				return;
			}
			d->is_callback = true;
			break;
		case ENDPOINT_HEALTHZ:
		case ENDPOINT_READYZ:
		case ENDPOINT_METRICS:
			if (strcmp(head->method, "GET") != 0 && strcmp(head->method, "HEAD") != 0)
			{
				d->status = 405;
				d->allow = "GET, HEAD";
				snprintf(d->message, sizeof d->message, "method not allowed; use GET");
			}
			return;
	}

	/* the scheme verify_request will use names the delivery id header */
	d->delivery_header = head->webhook_signature != NULL && head->webhook_signature[0] != '\0'
							 ? "webhook-id"
							 : "X-GitHub-Delivery";

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
	return obj;
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
