/*
 * answer.c - GitHub's answers turned into decisions.
 *
 * Status codes as GitHub documents them for "create a workflow dispatch
 * event" and for rate limits ("Rate limits for the REST API"): 204, or 200
 * with the run when return_run_details was asked; 4xx refusals with a JSON
 * {"message": ...}; 403 or 429 for a primary rate limit
 * (x-ratelimit-remaining: 0, wait until x-ratelimit-reset) or a secondary
 * one (retry-after seconds, else at least a minute).
 */
#define _GNU_SOURCE /* strptime */
#include "answer.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A run id or a Unix time: digits only, no sign, no spaces. */
static bool
parse_count(const char *s, long long *v)
{
	char *end;

	if (s == NULL || *s < '0' || *s > '9')
		return false;
	errno = 0;
	*v = strtoll(s, &end, 10);
	while (*end == ' ' || *end == '\t')
		end++;
	return errno == 0 && *end == '\0';
}

/* cJSON number that is a positive integer a double holds exactly. */
static bool
json_id(const cJSON *item, long long *v)
{
	double d;

	if (!cJSON_IsNumber(item))
		return false;
	d = item->valuedouble;
	if (d < 1 || d > 9007199254740992.0 || floor(d) != d)
		return false;
	*v = (long long) d;
	return true;
}

/* An http(s) URL fit for the database and the log: no spaces or controls. */
static bool
usable_url(const char *s, size_t maxlen)
{
	size_t len;

	if (s == NULL || (strncmp(s, "https://", 8) != 0 && strncmp(s, "http://", 7) != 0))
		return false;
	len = strlen(s);
	if (len >= maxlen)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char) s[i] <= ' ' || (unsigned char) s[i] == 0x7f)
			return false;
	return true;
}

/* Copies text on one line: control characters become spaces, runs of them one. */
static void
one_line(const char *text, size_t n, char *buf, size_t len)
{
	size_t used = 0;
	bool   space = false;

	for (size_t i = 0; i < n && text[i] != '\0' && used + 1 < len; i++)
	{
		unsigned char c = (unsigned char) text[i];

		if (c < ' ' || c == 0x7f || c == ' ')
		{
			space = used > 0;
			continue;
		}
		if (space && used + 2 < len)
			buf[used++] = ' ';
		space = false;
		buf[used++] = (char) c;
	}
	buf[used] = '\0';
}

void
answer_message(const struct api_answer *a, char *buf, size_t len)
{
	cJSON       *root = a->body != NULL ? cJSON_Parse(a->body) : NULL;
	const cJSON *msg = cJSON_GetObjectItemCaseSensitive(root, "message");

	if (cJSON_IsString(msg) && msg->valuestring[0] != '\0')
		one_line(msg->valuestring, strlen(msg->valuestring), buf, len);
	else if (root == NULL && a->body != NULL && a->body[0] != '\0')
		one_line(a->body, 200, buf, len);
	else
		buf[0] = '\0';
	if (buf[0] == '\0')
		snprintf(buf, len, "no message");
	cJSON_Delete(root);
}

void
answer_describe(const struct api_answer *a, char *buf, size_t len)
{
	char msg[400];

	if (a->status == 0)
	{
		snprintf(buf, len, "%s", a->transport_error != NULL ? a->transport_error : "no answer");
		return;
	}
	answer_message(a, msg, sizeof msg);
	snprintf(buf, len, "HTTP %ld: %s", a->status, msg);
}

bool
answer_rate_limited(const struct api_answer *a)
{
	char msg[400];

	if (a->status != 403 && a->status != 429)
		return false;
	if (a->retry_after != NULL || a->status == 429)
		return true;
	if (a->ratelimit_remaining != NULL && strcmp(a->ratelimit_remaining, "0") == 0)
		return true;
	/* a secondary limit may come with no header at all, only its message */
	answer_message(a, msg, sizeof msg);
	for (char *p = msg; *p; p++)
		*p = (char) tolower((unsigned char) *p);
	return strstr(msg, "rate limit") != NULL;
}

static time_t
clamp_pause(time_t until, time_t now)
{
	if (until <= now)
		return now + 1;
	if (until > now + RATE_LIMIT_MAX_PAUSE_S)
		return now + RATE_LIMIT_MAX_PAUSE_S;
	return until;
}

time_t
decide_rate_limit(const struct api_answer *a, time_t now)
{
	long long v;
	bool exhausted = a->ratelimit_remaining != NULL && strcmp(a->ratelimit_remaining, "0") == 0;

	if (answer_rate_limited(a))
	{
		if (parse_count(a->retry_after, &v))
			return clamp_pause(now + (time_t) v, now);
		if (exhausted && parse_count(a->ratelimit_reset, &v))
			return clamp_pause((time_t) v, now);
		return now + RATE_LIMIT_DEFAULT_PAUSE_S;
	}
	/* the call went through but was the last one allowed until the reset */
	if (exhausted && parse_count(a->ratelimit_reset, &v) && (time_t) v > now)
		return clamp_pause((time_t) v, now);
	return 0;
}

/* The run of a 200 answer to a dispatch with return_run_details. */
static void
parse_run_details(const char *body, struct dispatch_decision *d)
{
	cJSON       *root = cJSON_Parse(body);
	const cJSON *url = cJSON_GetObjectItemCaseSensitive(root, "html_url");

	/* the id is what fences; a URL that could not go into a log or a link is left out */
	if (json_id(cJSON_GetObjectItemCaseSensitive(root, "workflow_run_id"), &d->run_id) &&
		cJSON_IsString(url) && usable_url(url->valuestring, sizeof d->run_url))
		snprintf(d->run_url, sizeof d->run_url, "%s", url->valuestring);
	cJSON_Delete(root);
}

void
decide_dispatch(const struct api_answer *a, const struct dispatch_call *call, time_t now,
				struct dispatch_decision *d)
{
	char what[500];

	memset(d, 0, sizeof *d);
	d->pause_until = decide_rate_limit(a, now);
	answer_describe(a, what, sizeof what);

	if (a->status == 0 || a->status >= 500)
	{
		d->action = DISPATCH_RETRY;
		snprintf(d->error, sizeof d->error, "%s", what);
	}
	else if (a->status >= 200 && a->status < 300)
	{
		/*
		 * Any 2xx means GitHub started a run: never send this job again.  A
		 * run that is not named is found by reconciliation or fenced at its
		 * first callback.
		 */
		d->action = DISPATCH_RECORD;
		if (a->status != 204 && a->body != NULL)
			parse_run_details(a->body, d);
	}
	else if (answer_rate_limited(a))
		d->action = DISPATCH_PAUSE;
	else if ((a->status == 400 || a->status == 422) && call->asked_run_details && a->body != NULL &&
			 strstr(a->body, "return_run_details") != NULL)
		d->action = DISPATCH_RESEND_PLAIN;
	else if (a->status == 401 && call->app_token && !call->renewed)
		d->action = DISPATCH_RENEW_TOKEN;
	else
	{
		d->action = DISPATCH_FAIL;
		snprintf(d->error, sizeof d->error, "dispatch: %s", what);
	}
}

bool
decide_backoff(int failures, double first_failure, double now, double give_up_s, double random01,
			   double *retry_at)
{
	double deadline = first_failure + give_up_s;
	double delay = BACKOFF_BASE_S;

	if (now >= deadline)
		return false;
	for (int i = 1; i < failures && delay < BACKOFF_CAP_S; i++)
		delay *= 2;
	if (delay > BACKOFF_CAP_S)
		delay = BACKOFF_CAP_S;
	/* "equal jitter": half the delay fixed, half random, so that dispatchers spread out */
	delay = delay / 2 + delay / 2 * random01;
	*retry_at = now + delay < deadline ? now + delay : deadline;
	return true;
}

void
decide_token(const struct api_answer *a, time_t now, struct token_decision *d)
{
	char what[500];

	memset(d, 0, sizeof *d);
	answer_describe(a, what, sizeof what);
	d->pause_until = decide_rate_limit(a, now);
	if (a->status == 201 || a->status == 200)
	{
		cJSON       *root = cJSON_Parse(a->body);
		const cJSON *token = cJSON_GetObjectItemCaseSensitive(root, "token");
		const cJSON *expires = cJSON_GetObjectItemCaseSensitive(root, "expires_at");
		bool         token_ok = cJSON_IsString(token) && token->valuestring[0] != '\0' &&
						strlen(token->valuestring) <= 4096;

		if (token_ok)
			for (const char *p = token->valuestring; *p; p++)
				if ((unsigned char) *p <= ' ' || (unsigned char) *p >= 0x7f)
					token_ok = false;
		if (token_ok && cJSON_IsString(expires) &&
			parse_utc_timestamp(expires->valuestring, &d->expires_at))
		{
			d->token = strdup(token->valuestring);
			d->action = d->token != NULL ? TOKEN_OK : TOKEN_RETRY;
			if (d->token == NULL)
				snprintf(d->error, sizeof d->error, "out of memory");
		}
		else
		{
			d->action = TOKEN_RETRY;
			snprintf(d->error, sizeof d->error,
					 "HTTP %ld without a usable token and expires_at in the body", a->status);
		}
		if (cJSON_IsString(token))
			memset(token->valuestring, 0, strlen(token->valuestring));
		cJSON_Delete(root);
		return;
	}
	snprintf(d->error, sizeof d->error, "%s", what);
	if (a->status == 0 || a->status >= 500)
		d->action = TOKEN_RETRY;
	else if (answer_rate_limited(a))
		d->action = TOKEN_PAUSE;
	else
		d->action = TOKEN_REFUSED;
}

bool
token_needs_renewal(time_t expires_at, time_t now)
{
	return now >= expires_at - TOKEN_RENEW_BEFORE_S;
}

/* Case-insensitive substring: run titles are whatever the workflow made them. */
static bool
contains_nocase(const char *hay, const char *needle)
{
	size_t n = strlen(needle);

	for (; *hay; hay++)
		if (strncasecmp(hay, needle, n) == 0)
			return true;
	return false;
}

int
runs_find(const char *body, const char *job_id, long long *run_id, char *run_url, size_t url_len,
		  int *nruns, char *err, size_t errlen)
{
	cJSON       *root = cJSON_Parse(body);
	const cJSON *runs = cJSON_GetObjectItemCaseSensitive(root, "workflow_runs");
	const cJSON *run;
	int          found = 0;

	*nruns = 0;
	if (!cJSON_IsArray(runs))
	{
		snprintf(err, errlen, "the answer has no workflow_runs array");
		cJSON_Delete(root);
		return -1;
	}
	cJSON_ArrayForEach(run, runs)
	{
		const cJSON *title = cJSON_GetObjectItemCaseSensitive(run, "display_title");
		const cJSON *name = cJSON_GetObjectItemCaseSensitive(run, "name");
		const cJSON *url = cJSON_GetObjectItemCaseSensitive(run, "html_url");
		long long    id;

		(*nruns)++;
		if (!json_id(cJSON_GetObjectItemCaseSensitive(run, "id"), &id))
			continue;
		if (!((cJSON_IsString(title) && contains_nocase(title->valuestring, job_id)) ||
			  (cJSON_IsString(name) && contains_nocase(name->valuestring, job_id))))
			continue;
		/* several runs for one job (a resend): the oldest is the one furthest along */
		if (found && id >= *run_id)
			continue;
		found = 1;
		*run_id = id;
		if (cJSON_IsString(url) && usable_url(url->valuestring, url_len))
			snprintf(run_url, url_len, "%s", url->valuestring);
		else
			run_url[0] = '\0';
	}
	cJSON_Delete(root);
	return found;
}

bool
parse_utc_timestamp(const char *s, time_t *t)
{
	struct tm tm;
	char     *end;

	memset(&tm, 0, sizeof tm);
	end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (end == NULL)
		return false;
	/* fractions of a second, then Z (GitHub's form) */
	if (*end == '.')
		for (end++; *end >= '0' && *end <= '9'; end++)
			;
	if (strcmp(end, "Z") != 0 && strcmp(end, "+00:00") != 0)
		return false;
	*t = timegm(&tm);
	return *t != (time_t) -1;
}

void
format_utc_timestamp(time_t t, char *buf, size_t len)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}
