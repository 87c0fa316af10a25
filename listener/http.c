/*
 * http.c - libmicrohttpd in one internal epoll thread, with suspend/resume.
 *
 * The polling thread only parses, checks and verifies; a callback that
 * passes every check is suspended and queued for a database worker, which
 * resumes it with the answer.  A slow or stalled client therefore costs one
 * socket and never a worker.  Idle clients are closed by MHD's connection
 * timeout; clients that drip a request byte by byte are closed by the
 * reaper thread once --request-timeout has passed since the connection
 * opened (or since its previous answer).
 *
 * Order of checks for a callback or a Stripe event: route (404/405),
 * framing (400), size (413), content type (415), signature (401), JSON
 * (400), then the database.
 */
#include "http.h"

#include "deadline.h"
#include "log.h"
#include "metrics.h"
#include "net.h"
#include "respond.h"
#include "route.h"
#include "verify.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DELIVERY_ID_MAX           255
#define FD_RESERVE                64 /* pool, log, resolver and spare fds */
#define OVERSIZE_CUTOFF(max_body) ((size_t) (max_body) *4 + 1024 * 1024)

/*
 * The secrets requests are verified with.  A reload (SIGHUP) swaps in a new
 * set while requests may be verifying with the current one: each takes a
 * reference under keys_lock and drops it when done, and the last reference
 * frees the set.  The server holds one reference to the current set.
 */
struct keyring
{
	atomic_long    refs;
	struct secrets callback;
	struct secrets stripe;
};

/* One connection, as the reaper sees it. */
struct conn_entry
{
	int                fd;
	bool               receiving; /* a request may be arriving: reapable */
	struct timespec    deadline;
	struct conn_entry *prev;
	struct conn_entry *next;
};

struct http_server
{
	struct MHD_Daemon   *daemon;
	const struct config *cfg;
	struct db_pool      *pool;
	pthread_mutex_t      keys_lock; /* guards keys, only to take a reference */
	struct keyring      *keys;
	bool                 stripe_configured; /* fixed at start: a reload keeps it */
	atomic_long          in_flight;
	atomic_bool          draining;
	pthread_mutex_t      lock; /* guards conns and the drain wait */
	pthread_cond_t       idle;
	struct conn_entry   *conns;
	pthread_t            reaper;
	pthread_cond_t       reaper_wake;
	bool                 reaper_stop;
	bool                 reaper_started;
};

/* One request, from its headers to the notification that it is done. */
struct request
{
	struct http_server    *server;
	struct MHD_Connection *conn;
	enum endpoint          ep;
	bool                   is_webhook;
	struct timespec        start;
	char                  *body;
	size_t                 len;
	size_t                 cap;
	bool                   too_large;
	size_t                 discarded;        /* body bytes dropped after too_large */
	bool                   check_type_later; /* chunked: Content-Type after size */
	bool                   queued;           /* waiting for a worker */
	bool                   answered;         /* the worker filled in job */
	unsigned int           status;           /* what was queued, 0 if nothing */
	char                   method[16];
	char                   path[256];
	struct verify_input    in;     /* the signature headers, then the body */
	enum verify_scheme     scheme; /* chosen once, from those headers */
	char                   delivery_id[DELIVERY_ID_MAX + 1];
	bool                   delivery_too_long;
	bool                   close;  /* the answer closes the connection */
	bool                   logged; /* the request's log line and metrics are out */
	char                   job_id[64];
	char                   event_id[256]; /* a Stripe event's, for the log */
	char                   event_type[128];
	struct db_job          job;
};

static struct keyring *
keyring_new(const struct secrets *callback, const struct secrets *stripe)
{
	struct keyring *k = malloc(sizeof *k);

	if (k == NULL)
		return NULL;
	atomic_init(&k->refs, 1);
	k->callback = *callback;
	k->stripe = *stripe;
	return k;
}

static struct keyring *
keyring_acquire(struct http_server *server)
{
	struct keyring *k;

	pthread_mutex_lock(&server->keys_lock);
	k = server->keys;
	atomic_fetch_add(&k->refs, 1);
	pthread_mutex_unlock(&server->keys_lock);
	return k;
}

static void
keyring_release(struct keyring *k)
{
	if (k != NULL && atomic_fetch_sub(&k->refs, 1) == 1)
	{
		secrets_clear(&k->callback);
		secrets_clear(&k->stripe);
		free(k);
	}
}

static struct conn_entry *
entry_of(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *info =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return info ? info->socket_context : NULL;
}

static void
set_receiving(struct http_server *server, struct MHD_Connection *conn, bool receiving)
{
	struct conn_entry *e = entry_of(conn);

	if (e == NULL)
		return;
	pthread_mutex_lock(&server->lock);
	e->receiving = receiving;
	if (receiving)
		deadline_after_ms(&e->deadline, CLOCK_MONOTONIC, server->cfg->request_timeout_ms);
	pthread_mutex_unlock(&server->lock);
}

/*
 * Writes the request's log line and counts it, once: when its answer is
 * queued (so a client that has the answer also finds it in the log and in
 * /metrics), or, for a client that left unanswered, when it is gone.
 */
static void
record_request(struct request *req)
{
	double duration;

	if (req->logged)
		return;
	req->logged = true;
	duration = deadline_seconds_since(&req->start, CLOCK_MONOTONIC);
	log_request(req->method, req->path, req->status, duration,
				req->delivery_id[0] ? req->delivery_id : NULL, req->job_id[0] ? req->job_id : NULL,
				req->event_id[0] ? req->event_id : NULL,
				req->event_type[0] ? req->event_type : NULL);
	if (req->status != 0)
		metrics_observe_request(req->ep, req->status, duration);
}

/* Out of memory while building an answer: a constant, no untrusted data. */
static const char OOM_BODY[] = "{\"error\":\"internal error\"}\n";

/*
 * Queues a response.  body is released with free_fn; NULL means it could
 * not be built, which becomes a 500.
 */
static enum MHD_Result
send_response(struct request *req, unsigned int status, char *body, const char *content_type,
			  void (*free_fn)(void *), unsigned int retry_after, const char *allow)
{
	struct MHD_Response *resp;
	enum MHD_Result      rc;

	if (body == NULL)
	{
		status = 500;
		content_type = "application/json";
		resp = MHD_create_response_from_buffer(sizeof OOM_BODY - 1, (void *) OOM_BODY,
											   MHD_RESPMEM_PERSISTENT);
	}
	else
		resp = MHD_create_response_from_buffer_with_free_callback(strlen(body), body, free_fn);
	if (resp == NULL)
	{
		free_fn(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	if (retry_after > 0)
	{
		char value[16];

		snprintf(value, sizeof value, "%u", retry_after);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, value);
	}
	if (allow != NULL)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
	if (req->close || atomic_load(&req->server->draining))
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	rc = MHD_queue_response(req->conn, status, resp);
	MHD_destroy_response(resp);
	if (rc == MHD_YES)
	{
		req->status = status;
		record_request(req);
	}
	return rc;
}

/*
 * Queues JSON text from cJSON, ended by a newline so that responses read
 * well in a terminal and pipelined answers start on a line of their own.
 */
static enum MHD_Result
send_json(struct request *req, unsigned int status, char *json, unsigned int retry_after,
		  const char *allow)
{
	char *body = NULL;

	if (json != NULL)
	{
		size_t len = strlen(json);

		body = malloc(len + 2);
		if (body != NULL)
		{
			memcpy(body, json, len);
			memcpy(body + len, "\n", 2);
		}
		cJSON_free(json);
	}
	return send_response(req, status, body, "application/json", free, retry_after, allow);
}

static enum MHD_Result
send_error(struct request *req, unsigned int status, const char *message)
{
	return send_json(req, status, json_error_body(message), 0, NULL);
}

static const char *
header(struct MHD_Connection *conn, const char *name)
{
	return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
}

struct framing_count
{
	int content_lengths;
	int transfer_encodings;
};

static enum MHD_Result
count_framing_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct framing_count *count = cls;

	(void) kind;
	(void) value;
	if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0)
		count->content_lengths++;
	else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0)
		count->transfer_encodings++;
	return MHD_YES;
}

/* Runs in a worker thread: hand the answer back to the polling thread. */
static void
job_done(struct db_job *job)
{
	struct request *req = (struct request *) ((char *) job - offsetof(struct request, job));

	req->answered = true;
	MHD_resume_connection(req->conn);
}

static enum MHD_Result
queue_job(struct request *req, enum db_job_kind kind)
{
	req->job.kind = kind;
	req->job.done = job_done;
	req->queued = true;
	set_receiving(req->server, req->conn, false);
	MHD_suspend_connection(req->conn);
	if (!db_submit(req->server->pool, &req->job))
	{
		req->job.outcome.kind = OUTCOME_BUSY;
		req->answered = true;
		MHD_resume_connection(req->conn);
	}
	return MHD_YES;
}

/*
 * Route, framing, size and (for known lengths) content type: all from the
 * headers.  The signature scheme is chosen here too, once: for a callback
 * it names the header the delivery id comes from, which every answer's log
 * line shows.
 */
static enum MHD_Result
on_headers(struct request *req, const char *url, const char *method)
{
	struct request_head  head;
	struct head_decision d;
	struct framing_count framing = {0, 0};

	/*
	 * libmicrohttpd reads the body by the first Content-Length, or as
	 * chunked when Transfer-Encoding says so whatever Content-Length says;
	 * only the whole header list shows whether the framing was ambiguous.
	 * This runs before any body byte reaches on_body().
	 */
	MHD_get_connection_values(req->conn, MHD_HEADER_KIND, count_framing_header, &framing);
	req->ep = endpoint_for_path(url);
	head.ep = req->ep;
	head.method = method;
	head.content_length = header(req->conn, MHD_HTTP_HEADER_CONTENT_LENGTH);
	head.transfer_encoding = header(req->conn, MHD_HTTP_HEADER_TRANSFER_ENCODING);
	head.content_type = header(req->conn, MHD_HTTP_HEADER_CONTENT_TYPE);
	head.max_body = req->server->cfg->max_body;
	head.stripe_configured = req->server->stripe_configured;
	head.content_lengths = framing.content_lengths;
	head.transfer_encodings = framing.transfer_encodings;
	decide_headers(&head, &d);

	req->is_webhook = d.is_webhook;
	req->close = d.close;
	req->check_type_later = d.check_type_later;
	if (d.is_webhook && req->ep == ENDPOINT_STRIPE)
	{
		req->in.stripe_signature = header(req->conn, "Stripe-Signature");
		req->scheme = SCHEME_STRIPE;
	}
	else if (d.is_webhook)
	{
		const char *delivery_header;
		const char *delivery_id;

		req->in.hub_signature = header(req->conn, "X-Hub-Signature-256");
		req->in.webhook_id = header(req->conn, "webhook-id");
		req->in.webhook_timestamp = header(req->conn, "webhook-timestamp");
		req->in.webhook_signature = header(req->conn, "webhook-signature");
		req->scheme = verify_choose_scheme(&req->in, req->server->cfg->schemes);
		delivery_header = verify_delivery_header(&req->in, req->scheme);
		delivery_id = header(req->conn, delivery_header);
		if (delivery_id != NULL)
		{
			snprintf(req->delivery_id, sizeof req->delivery_id, "%s", delivery_id);
			req->delivery_too_long = strlen(delivery_id) > DELIVERY_ID_MAX;
		}
	}
	if (d.status != 0)
		return send_json(req, d.status, json_error_body(d.message), 0, d.allow);

	/*
	 * Probes are answered once libmicrohttpd has the whole request, so their
	 * connection can stay open for the next probe; callbacks read their body.
	 */
	return MHD_YES;
}

static void
on_body(struct request *req, const char *data, size_t size)
{
	size_t max = (size_t) req->server->cfg->max_body;

	if (req->too_large)
	{
		req->discarded += size;
		return;
	}
	if (size > max - req->len)
	{
		req->too_large = true;
		free(req->body);
		req->body = NULL;
		req->len = req->cap = 0;
		return;
	}
	if (req->len + size + 1 > req->cap)
	{
		size_t cap = req->cap ? req->cap : 1024;
		char  *body;

		while (cap < req->len + size + 1)
			cap *= 2;
		if (cap > max + 1)
			cap = max + 1;
		body = realloc(req->body, cap);
		if (body == NULL)
		{
			/* answered as too large: the only limit a client can act on */
			req->too_large = true;
			return;
		}
		req->body = body;
		req->cap = cap;
	}
	memcpy(req->body + req->len, data, size);
	req->len += size;
}

/* /healthz, /metrics and /readyz, once their request is complete. */
static enum MHD_Result
on_probe(struct request *req)
{
	if (req->ep == ENDPOINT_HEALTHZ)
	{
		cJSON *obj = cJSON_CreateObject();
		char  *body = NULL;

		if (obj != NULL && cJSON_AddStringToObject(obj, "status", "ok") != NULL)
			body = cJSON_PrintUnformatted(obj);
		cJSON_Delete(obj);
		return send_json(req, 200, body, 0, NULL);
	}
	if (req->ep == ENDPOINT_METRICS)
	{
		size_t len;
		char  *text = metrics_render(&len);

		if (text == NULL)
			return send_error(req, 500, "internal error");
		return send_response(req, 200, text, "text/plain; version=0.0.4; charset=utf-8", free, 0,
							 NULL);
	}
	return queue_job(req, DB_JOB_READY);
}

/* The whole request is in: the remaining checks, then the database. */
static enum MHD_Result
on_complete(struct request *req)
{
	const struct config *cfg = req->server->cfg;
	struct verify_result vr;
	struct keyring      *keys;
	cJSON               *payload;
	char                 msg[160];

	if (req->too_large)
	{
		snprintf(msg, sizeof msg, "request body exceeds the limit of %ld bytes", cfg->max_body);
		return send_error(req, 413, msg);
	}
	if (req->check_type_later &&
		!content_type_is_json(header(req->conn, MHD_HTTP_HEADER_CONTENT_TYPE)))
		return send_error(req, 415, "header Content-Type must be application/json");

	if (req->body == NULL)
	{
		req->body = malloc(1);
		if (req->body == NULL)
			return send_error(req, 500, "internal error");
	}
	req->body[req->len] = '\0';

	req->in.body = (const unsigned char *) req->body;
	req->in.body_len = req->len;
	req->in.now = (int64_t) time(NULL);
	req->in.tolerance = cfg->tolerance;

	/* each route has its own secrets: neither kind can verify the other */
	keys = keyring_acquire(req->server);
	verify_request(req->scheme == SCHEME_STRIPE ? &keys->stripe : &keys->callback, &req->in,
				   req->scheme, cfg->schemes, &vr);
	keyring_release(keys);
	if (vr.status != VERIFY_OK)
	{
		metrics_signature_failure();
		if (vr.status == VERIFY_INTERNAL)
		{
			log_error("signature verification failed inside OpenSSL");
			return send_error(req, 500, "internal error");
		}
		return send_error(req, 401, vr.message);
	}
	if (req->delivery_too_long)
	{
		snprintf(msg, sizeof msg, "header %s is longer than %d characters",
				 verify_delivery_header(&req->in, req->scheme), DELIVERY_ID_MAX);
		return send_error(req, 400, msg);
	}

	payload = parse_callback_body(req->body, req->len, msg, sizeof msg);
	if (payload == NULL)
		return send_error(req, 400, msg);
	if (req->scheme == SCHEME_STRIPE)
	{
		/* the event's id and type name it in the log; the body never does */
		json_string_member(payload, "id", req->event_id, sizeof req->event_id);
		json_string_member(payload, "type", req->event_type, sizeof req->event_type);
		cJSON_Delete(payload);
		req->job.payload = req->body;
		req->job.delivery_id = NULL;
		return queue_job(req, DB_JOB_STRIPE);
	}
	json_job_id(payload, req->job_id, sizeof req->job_id);
	cJSON_Delete(payload);

	req->job.payload = req->body;
	req->job.delivery_id = req->delivery_id[0] ? req->delivery_id : NULL;
	return queue_job(req, DB_JOB_CALLBACK);
}

/*
 * A worker is done with the request's job: its outcome becomes the answer
 * (respond.c), and a database error the answer calls for is logged and
 * counted here, where the request it belongs to is known.
 */
static enum MHD_Result
on_job_done(struct request *req)
{
	const struct outcome *o = &req->job.outcome;
	struct answer_context ctx;
	struct answer         a;

	ctx.stripe = req->job.kind == DB_JOB_STRIPE;
	ctx.delivery_id = req->job.delivery_id;
	ctx.job_id = req->job_id[0] ? req->job_id : NULL;
	answer_outcome(o, &ctx, &a);
	if (o->job_id != NULL && strlen(o->job_id) < sizeof req->job_id)
		snprintf(req->job_id, sizeof req->job_id, "%s", o->job_id);
	if (a.db_error)
		metrics_db_error();
	if (a.log != ANSWER_LOG_NONE)
	{
		const char *function = ctx.stripe ? "handle_stripe_event" : "handle_callback";
		const char *sqlstate = o->sqlstate[0] ? o->sqlstate : "none";
		const char *message = o->message ? o->message : "database error";

		if (a.log == ANSWER_LOG_WARN)
			log_warn("%s failed: SQLSTATE %s: %s", function, sqlstate, message);
		else
			log_error("%s failed: SQLSTATE %s: %s", function, sqlstate, message);
	}
	req->queued = false;
	return send_json(req, a.status, a.body, a.retry_after, NULL);
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
		   const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct http_server *server = cls;
	struct request     *req = *con_cls;

	(void) version;
	if (req == NULL)
	{
		req = calloc(1, sizeof *req);
		if (req == NULL)
			return MHD_NO;
		req->server = server;
		req->conn = conn;
		snprintf(req->method, sizeof req->method, "%s", method);
		snprintf(req->path, sizeof req->path, "%s", url);
		clock_gettime(CLOCK_MONOTONIC, &req->start);
		*con_cls = req;
		atomic_fetch_add(&server->in_flight, 1);
		return on_headers(req, url, method);
	}
	if (req->queued)
	{
		/* resumed by a worker: its answer is ready */
		if (!req->answered)
			return MHD_YES;
		return on_job_done(req);
	}
	if (*upload_data_size > 0)
	{
		on_body(req, upload_data, *upload_data_size);
		*upload_data_size = 0;

		/*
		 * libmicrohttpd can only answer once the body is complete, so an
		 * oversized chunked body is read and dropped to give its 413; a
		 * sender that keeps going far beyond the limit is cut off instead.
		 */
		if (req->too_large && req->discarded > OVERSIZE_CUTOFF(server->cfg->max_body))
			return MHD_NO;
		return MHD_YES;
	}
	if (!req->is_webhook)
		return on_probe(req);
	return on_complete(req);
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct http_server *server = cls;
	struct request     *req = *con_cls;

	(void) toe;
	if (req == NULL)
		return;
	*con_cls = NULL;
	record_request(req);
	set_receiving(server, conn, true);
	outcome_clear(&req->job.outcome);
	free(req->body);
	free(req);

	pthread_mutex_lock(&server->lock);
	if (atomic_fetch_sub(&server->in_flight, 1) == 1)
		pthread_cond_broadcast(&server->idle);
	pthread_mutex_unlock(&server->lock);
}

/*
 * Tracks connections for the reaper.  MHD reports a closed connection here
 * before it closes the socket, so under the lock an entry's fd is always the
 * connection's own.
 */
static void
on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	struct http_server *server = cls;
	struct conn_entry  *e;

	if (code == MHD_CONNECTION_NOTIFY_STARTED)
	{
		const union MHD_ConnectionInfo *info =
			MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

		e = calloc(1, sizeof *e);
		if (e == NULL || info == NULL)
		{
			free(e);
			return;
		}
		e->fd = info->connect_fd;
		e->receiving = true;
		deadline_after_ms(&e->deadline, CLOCK_MONOTONIC, server->cfg->request_timeout_ms);
		pthread_mutex_lock(&server->lock);
		e->next = server->conns;
		if (server->conns != NULL)
			server->conns->prev = e;
		server->conns = e;
		pthread_mutex_unlock(&server->lock);
		*socket_context = e;
		return;
	}

	e = *socket_context;
	if (e == NULL)
		return;
	pthread_mutex_lock(&server->lock);
	if (e->prev != NULL)
		e->prev->next = e->next;
	else
		server->conns = e->next;
	if (e->next != NULL)
		e->next->prev = e->prev;
	pthread_mutex_unlock(&server->lock);
	free(e);
	*socket_context = NULL;
}

/*
 * Closes connections whose request has not fully arrived by its deadline.
 * shutdown() makes MHD see the end of the stream and close the connection
 * in its own thread, the only one allowed to.
 */
static void *
reaper_main(void *arg)
{
	struct http_server *server = arg;

	pthread_mutex_lock(&server->lock);
	while (!server->reaper_stop)
	{
		struct timespec now;
		struct timespec wake;

		clock_gettime(CLOCK_MONOTONIC, &now);
		for (struct conn_entry *e = server->conns; e != NULL; e = e->next)
			if (e->receiving && deadline_passed(&e->deadline, &now))
			{
				shutdown(e->fd, SHUT_RDWR);
				e->receiving = false;
			}
		deadline_after_ms(&wake, CLOCK_REALTIME, 1000);
		pthread_cond_timedwait(&server->reaper_wake, &server->lock, &wake);
	}
	pthread_mutex_unlock(&server->lock);
	return NULL;
}

/* Raises the open-file limit to its hard limit; returns the new soft limit. */
static rlim_t
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 1024;
	if (rl.rlim_cur < rl.rlim_max)
	{
		rlim_t old = rl.rlim_cur;

		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		{
			log_warn("cannot raise the open-file limit: setrlimit: %s", strerror(errno));
			rl.rlim_cur = old;
		}
	}
	return rl.rlim_cur;
}

int
http_bind(const struct config *cfg, char *err, size_t errlen)
{
	long backlog = cfg->max_connections < SOMAXCONN ? SOMAXCONN : cfg->max_connections;

	return net_listen(cfg->listen_host, cfg->listen_port, (int) backlog, err, errlen);
}

struct http_server *
http_start(const struct config *cfg, int listen_fd, struct db_pool *pool, char *err, size_t errlen)
{
	struct http_server *server = calloc(1, sizeof *server);
	rlim_t              fds = raise_fd_limit();
	long                limit = cfg->max_connections;
	pthread_condattr_t  attr;
	int                 rc;

	if (server == NULL)
	{
		snprintf(err, errlen, "cannot start the HTTP server: out of memory");
		return NULL;
	}
	server->cfg = cfg;
	server->pool = pool;
	pthread_mutex_init(&server->lock, NULL);
	pthread_mutex_init(&server->keys_lock, NULL);
	server->stripe_configured = cfg->stripe_enabled;
	server->keys = keyring_new(&cfg->secrets, &cfg->stripe_secrets);
	if (server->keys == NULL)
	{
		snprintf(err, errlen, "cannot start the HTTP server: out of memory");
		http_stop(server);
		return NULL;
	}
	pthread_cond_init(&server->idle, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_REALTIME);
	pthread_cond_init(&server->reaper_wake, &attr);
	pthread_condattr_destroy(&attr);

	if ((rlim_t) limit + (rlim_t) cfg->pool + FD_RESERVE > fds)
	{
		long capped = (long) fds - cfg->pool - FD_RESERVE;

		if (capped < 4)
		{
			snprintf(err, errlen, "open-file limit %llu is too low for --pool %ld; raise ulimit -n",
					 (unsigned long long) fds, cfg->pool);
			http_stop(server);
			return NULL;
		}
		log_warn("connection limit lowered from %ld to %ld by the open-file limit %llu", limit,
				 capped, (unsigned long long) fds);
		limit = capped;
	}

	rc = pthread_create(&server->reaper, NULL, reaper_main, server);
	if (rc != 0)
	{
		snprintf(err, errlen, "cannot start the reaper thread: pthread_create: %s", strerror(rc));
		http_stop(server);
		return NULL;
	}
	server->reaper_started = true;

	server->daemon = MHD_start_daemon(
		MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
			MHD_USE_ERROR_LOG,
		0, NULL, NULL, on_request, server, MHD_OPTION_EXTERNAL_LOGGER, log_libmicrohttpd, NULL,
		MHD_OPTION_LISTEN_SOCKET, listen_fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned int) limit,
		MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int) cfg->max_connections_per_ip,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) ((cfg->idle_timeout_ms + 999) / 1000),
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, server, MHD_OPTION_NOTIFY_CONNECTION,
		on_connection, server, MHD_OPTION_END);
	if (server->daemon == NULL)
	{
		snprintf(err, errlen, "cannot start the HTTP server: MHD_start_daemon failed");
		http_stop(server);
		return NULL;
	}
	return server;
}

bool
http_replace_secrets(struct http_server *server, const struct secrets *callback,
					 const struct secrets *stripe)
{
	struct keyring *current = keyring_acquire(server);
	struct keyring *next =
		keyring_new(callback ? callback : &current->callback, stripe ? stripe : &current->stripe);
	struct keyring *old;

	keyring_release(current);
	if (next == NULL)
		return false;
	pthread_mutex_lock(&server->keys_lock);
	old = server->keys;
	server->keys = next;
	pthread_mutex_unlock(&server->keys_lock);
	keyring_release(old);
	return true;
}

void
http_quiesce(struct http_server *server)
{
	MHD_socket fd;

	atomic_store(&server->draining, true);
	fd = MHD_quiesce_daemon(server->daemon);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
}

bool
http_drain(struct http_server *server, long timeout_ms)
{
	struct timespec deadline;
	bool            idle = true;

	deadline_after_ms(&deadline, CLOCK_REALTIME, timeout_ms);
	pthread_mutex_lock(&server->lock);
	while (atomic_load(&server->in_flight) > 0)
		if (pthread_cond_timedwait(&server->idle, &server->lock, &deadline) == ETIMEDOUT)
		{
			idle = atomic_load(&server->in_flight) == 0;
			break;
		}
	pthread_mutex_unlock(&server->lock);
	return idle;
}

void
http_stop(struct http_server *server)
{
	if (server->daemon != NULL)
		MHD_stop_daemon(server->daemon);
	if (server->reaper_started)
	{
		pthread_mutex_lock(&server->lock);
		server->reaper_stop = true;
		pthread_cond_signal(&server->reaper_wake);
		pthread_mutex_unlock(&server->lock);
		pthread_join(server->reaper, NULL);
	}
	keyring_release(server->keys);
	pthread_mutex_destroy(&server->keys_lock);
	pthread_mutex_destroy(&server->lock);
	pthread_cond_destroy(&server->idle);
	pthread_cond_destroy(&server->reaper_wake);
	free(server);
}
