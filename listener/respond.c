/*
 * respond.c - the answer to each request the database saw: an outcome
 * (outcome.h) becomes a status, a JSON body and a Retry-After.  Pure: no
 * MHD, no libpq, no logging.
 */
#include "respond.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Retry-After, in seconds: soon for a moment's congestion (a busy pool or
 * queue, a lost connection, a refused probe), a little later for a
 * database that is down and reconnecting with backoff.
 */
#define RETRY_SOON 1
#define RETRY_DOWN 2

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
	else if (sqlstate_is_serialization_failure(s))
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
static char *
copy_body(const char *text)
{
	size_t n = strlen(text) + 1;
	char  *body = cJSON_malloc(n);

	if (body != NULL)
		memcpy(body, text, n);
	return body;
}

static void
set(struct answer *a, unsigned int status, char *body, unsigned int retry_after)
{
	a->status = status;
	a->body = body;
	a->retry_after = retry_after;
}

/* A refusal from the server (OUTCOME_ERROR). */
static void
answer_error(const struct outcome *o, const struct answer_context *ctx, struct answer *a)
{
	const char            *message = o->message != NULL ? o->message : "database error";
	const char            *sqlstate = o->sqlstate[0] != '\0' ? o->sqlstate : NULL;
	struct sqlstate_action action =
		ctx->stripe ? stripe_sqlstate_to_http(sqlstate) : sqlstate_to_http(sqlstate);
	char status[64];
	char run_id[32];

	/*
	 * A unique violation other than the delivery binding's (a constraint a
	 * DBA added) is nothing the sender can act on.
	 */
	if (!ctx->stripe && action.http_status == 422 &&
		!is_delivery_conflict(message, ctx->delivery_id))
		action.http_status = 500;

	/*
	 * A callback or Stripe event the database refused (400, 404, 409, 422)
	 * is the sender's error, not the database's: provision_db_errors_total
	 * would alert on it.
	 */
	a->db_error = action.retry || action.http_status >= 500;
	switch (action.http_status)
	{
		case 400:
		case 404:
			set(a, action.http_status, json_error_body(message), 0);
			break;
		case 409:
			set(a, 409,
				json_conflict_body(message, ctx->job_id,
								   detail_current_status(o->detail, status, sizeof status),
								   hint_workflow_run_id(o->hint, run_id, sizeof run_id)),
				0);
			break;
		case 422:
			set(a, 422,
				ctx->stripe ? json_error_body(message)
							: json_delivery_conflict_body(message, ctx->delivery_id, o->detail),
				0);
			break;
		case 503:
			a->log = ANSWER_LOG_WARN;
			set(a, 503,
				json_error_body(action.retry
									? "database conflict persisted after retries; retry later"
									: "database temporarily unavailable; retry later"),
				RETRY_SOON);
			break;
		default:
			a->log = ANSWER_LOG_ERROR;
			set(a, 500, json_error_body("internal error"), 0);
			break;
	}
}

void
answer_outcome(const struct outcome *o, const struct answer_context *ctx, struct answer *a)
{
	memset(a, 0, sizeof *a);
	switch (o->kind)
	{
		case OUTCOME_RESULT:
			set(a, 200, copy_body(o->text), 0);
			break;
		case OUTCOME_ERROR:
			answer_error(o, ctx, a);
			break;
		case OUTCOME_LOST:
			set(a, 503, json_error_body("database connection lost; retry later"), RETRY_SOON);
			break;
		case OUTCOME_NO_CONNECTION:
			set(a, 503, json_error_body("database unavailable; retry later"), RETRY_DOWN);
			break;
		case OUTCOME_POOL_TIMEOUT:
			set(a, 503, json_error_body("no database connection became free in time; retry later"),
				RETRY_SOON);
			break;
		case OUTCOME_BUSY:
			set(a, 503, json_error_body("server is busy or shutting down; retry later"),
				RETRY_SOON);
			break;
		case OUTCOME_READY:
		{
			cJSON *obj = cJSON_CreateObject();

			if (obj != NULL && cJSON_AddStringToObject(obj, "status", "ready") != NULL)
				set(a, 200, print_and_free(obj), 0);
			else
			{
				cJSON_Delete(obj);
				set(a, 200, NULL, 0);
			}
			break;
		}
		case OUTCOME_NOT_READY:
			set(a, 503, json_error_body(o->text != NULL ? o->text : "not ready"), RETRY_SOON);
			break;
		case OUTCOME_SHUTTING_DOWN:
			set(a, 503, json_error_body("shutting down"), RETRY_SOON);
			break;
		case OUTCOME_NONE:
		case OUTCOME_NO_RESULT:
		default:
			set(a, 500, json_error_body("internal error"), 0);
			break;
	}
	if (a->body == NULL)
		a->status = 500;
}
