/*
 * http.c - /healthz, /readyz and /metrics.
 *
 * Every answer is computed from memory (metrics atomics, the readiness the
 * main loop publishes), so a flood of probes never reaches the database or
 * GitHub.
 */
#include "http.h"

#include "log.h"
#include "metrics.h"

#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONNECTION_LIMIT 64
#define IDLE_TIMEOUT_S   10

struct http_server
{
	struct MHD_Daemon *daemon;
	http_ready_fn      ready;
	void              *ready_arg;
};

static enum MHD_Result
send_text(struct MHD_Connection *conn, unsigned int status, char *body, const char *type,
		  const char *allow)
{
	struct MHD_Response *resp;
	enum MHD_Result      rc;

	if (body == NULL)
		return MHD_NO;
	resp = MHD_create_response_from_buffer_with_free_callback(strlen(body), body, free);
	if (resp == NULL)
	{
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (allow != NULL)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
	rc = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return rc;
}

/* {"key": "value"} as a malloc'd string. */
static char *
json_object(const char *key, const char *value)
{
	cJSON *obj = cJSON_CreateObject();
	char  *text = NULL;
	char  *copy = NULL;

	if (obj != NULL && cJSON_AddStringToObject(obj, key, value) != NULL)
		text = cJSON_PrintUnformatted(obj);
	cJSON_Delete(obj);
	if (text != NULL)
	{
		copy = strdup(text);
		cJSON_free(text);
	}
	return copy;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
		   const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct http_server *server = cls;
	const char         *json = "application/json";

	(void) version;
	(void) upload_data;
	(void) con_cls;
	/* a request body, if any, is read and ignored */
	if (*upload_data_size != 0)
	{
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (strcmp(url, "/healthz") != 0 && strcmp(url, "/readyz") != 0 && strcmp(url, "/metrics") != 0)
		return send_text(conn, 404, json_object("error", "not found"), json, NULL);
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return send_text(conn, 405, json_object("error", "method not allowed: use GET"), json,
						 "GET, HEAD");
	if (strcmp(url, "/healthz") == 0)
		return send_text(conn, 200, json_object("status", "ok"), json, NULL);
	if (strcmp(url, "/readyz") == 0)
	{
		char reason[512];

		if (server->ready(server->ready_arg, reason, sizeof reason))
			return send_text(conn, 200, json_object("status", "ready"), json, NULL);
		return send_text(conn, 503, json_object("error", reason), json, NULL);
	}
	{
		size_t len;
		char  *text = metrics_render(&len);

		if (text == NULL)
			return send_text(conn, 500, json_object("error", "internal error"), json, NULL);
		return send_text(conn, 200, text, "text/plain; version=0.0.4; charset=utf-8", NULL);
	}
}

struct http_server *
http_start(int listen_fd, http_ready_fn ready, void *arg, char *err, size_t errlen)
{
	struct http_server *server = calloc(1, sizeof *server);

	if (server == NULL)
	{
		snprintf(err, errlen, "cannot start the metrics server: out of memory");
		return NULL;
	}
	server->ready = ready;
	server->ready_arg = arg;
	server->daemon = MHD_start_daemon(
		MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG, 0, NULL, NULL,
		on_request, server, MHD_OPTION_EXTERNAL_LOGGER, log_libmicrohttpd, NULL,
		MHD_OPTION_LISTEN_SOCKET, listen_fd, MHD_OPTION_CONNECTION_LIMIT,
		(unsigned int) CONNECTION_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
		(unsigned int) IDLE_TIMEOUT_S, MHD_OPTION_END);
	if (server->daemon == NULL)
	{
		snprintf(err, errlen, "cannot start the metrics server: MHD_start_daemon failed");
		free(server);
		return NULL;
	}
	return server;
}

void
http_stop(struct http_server *server)
{
	if (server == NULL)
		return;
	MHD_stop_daemon(server->daemon);
	free(server);
}
