/*
 * route.c - what a request is, before the database sees it: its endpoint,
 * what its headers alone decide, and its body parsed once.
 */
#include "route.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define JSON_MEDIA_TYPE "application/json"

/* The paths, in enum endpoint order; each is also its metrics label. */
static const char *const endpoint_paths[ENDPOINT_COUNT] = {"/webhooks/github",
														   "/api/webhooks/github",
														   "/webhooks/stripe",
														   "/healthz",
														   "/readyz",
														   "/metrics",
														   "other"};

enum endpoint
endpoint_for_path(const char *path)
{
	for (int i = 0; i < ENDPOINT_OTHER; i++)
		if (strcmp(path, endpoint_paths[i]) == 0)
			return (enum endpoint) i;
	return ENDPOINT_OTHER;
}

const char *
endpoint_label(enum endpoint ep)
{
	return endpoint_paths[ep < ENDPOINT_COUNT ? ep : ENDPOINT_OTHER];
}

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

/* "chunked", any case, with optional whitespace around it. */
static bool
transfer_encoding_is_chunked(const char *value)
{
	const char *p = value;
	size_t      n = strlen("chunked");

	while (*p == ' ' || *p == '\t')
		p++;
	if (strncasecmp(p, "chunked", n) != 0)
		return false;
	p += n;
	while (*p == ' ' || *p == '\t')
		p++;
	return *p == '\0';
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
	/*
	 * Any other coding leaves the end of the body unknown (RFC 9112 6.1):
	 * libmicrohttpd would read until the client closes, and the request
	 * would end only at --request-timeout.
	 */
	if (head->transfer_encoding != NULL && !transfer_encoding_is_chunked(head->transfer_encoding))
	{
		d->status = 400;
		d->close = true;
		snprintf(d->message, sizeof d->message, "header Transfer-Encoding must be chunked");
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

/* A copy of the result text that cJSON_free releases, as every body is. */
