/*
 * route.h - routing and the request side of every answer, pure (no MHD, no
 * libpq): the endpoint a path names, what the headers alone decide, and the
 * body parsed once for the checks and the log line.
 */
#ifndef PROVISION_ROUTE_H
#define PROVISION_ROUTE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

enum endpoint
{
	ENDPOINT_WEBHOOK,     /* /webhooks/github */
	ENDPOINT_API_WEBHOOK, /* /api/webhooks/github */
	ENDPOINT_STRIPE,      /* /webhooks/stripe */
	ENDPOINT_HEALTHZ,
	ENDPOINT_READYZ,
	ENDPOINT_METRICS,
	ENDPOINT_OTHER, /* anything unknown, one label value */
	ENDPOINT_COUNT
};

/* The endpoint a request path names; its path is also its metrics label. */
enum endpoint endpoint_for_path(const char *path);
const char   *endpoint_label(enum endpoint ep);

/* application/json, any case, optionally followed by ";" parameters. */
bool content_type_is_json(const char *content_type);

/* The headers of a request that decide_headers() looks at (NULL: absent). */
struct request_head
{
	enum endpoint ep;
	const char   *method;
	const char   *content_length; /* the first one */
	const char   *transfer_encoding;
	const char   *content_type;
	long          max_body;
	bool          stripe_configured;  /* else /webhooks/stripe is unknown */
	int           content_lengths;    /* how many Content-Length headers */
	int           transfer_encodings; /* how many Transfer-Encoding headers */
};

/* What the headers alone decide. */
struct head_decision
{
	unsigned int status;           /* 0: carry on and read the body */
	const char  *allow;            /* for a 405 */
	char         message[128];     /* the error for a non-zero status */
	bool         is_webhook;       /* a callback or Stripe event to check and run */
	bool         check_type_later; /* chunked: Content-Type after the size */
	bool         close;            /* answer, then close: the framing is ambiguous */
};

/*
 * Route (404, 405), framing (400: more than one Content-Length or
 * Transfer-Encoding header, both kinds, or a Transfer-Encoding other than
 * chunked), size (413 by Content-Length)
 * and, when the length is known, content type (415), in that order, from
 * the headers alone.
 */
void decide_headers(const struct request_head *head, struct head_decision *d);

/*
 * Parses a callback body or a Stripe event.  Returns the object, or NULL
 * with an error message for the 400 body in err: not JSON, trailing bytes,
 * not an object, or a key that appears twice at the top level.
 */
cJSON *parse_callback_body(const char *body, size_t len, char *err, size_t errlen);

/*
 * The "job_id" string member of a payload, copied into buf, or
 * NULL when it is missing or not a string.
 */
const char *json_job_id(const cJSON *obj, char *buf, size_t len);

/*
 * The string member key of obj copied into buf, cut to len - 1 bytes, or
 * NULL when it is missing or not a string (a Stripe event's id and type,
 * for the log).
 */
const char *json_string_member(const cJSON *obj, const char *key, char *buf, size_t len);

#endif
