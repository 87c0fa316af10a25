/*
 * log.h - leveled logging to stderr, as text (key=value) or one JSON object
 * per line.
 */
#ifndef PROVISION_LOG_H
#define PROVISION_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

enum log_format
{
	LOG_FORMAT_TEXT,
	LOG_FORMAT_JSON
};

void log_set_format(enum log_format format);

/*
 * libmicrohttpd's error log (MHD_OPTION_EXTERNAL_LOGGER), as warnings.  MHD
 * reports every client that disconnects or times out; those are normal for
 * a server on the network (and the listener's reaper causes some on
 * purpose), so only the daemon's own troubles reach the log.
 */
void log_libmicrohttpd(void *cls, const char *fmt, va_list ap);

struct opt_spec;

/*
 * Option-table parser (options.h) for --log-format: "text" or "json" into
 * the enum log_format at the option's offset.
 */
bool log_format_option(const struct opt_spec *opt, void *cfg, const char *value, bool from_env,
					   char *err, size_t errlen);

/*
 * msg on one line, for a log message: its lines joined with "; ", without
 * the tab-indented lines under them (libpq's hints).  libpq's message after
 * a multi-host connection attempt has one line per host tried, and each
 * host's reason matters.  Writes at most len bytes (truncated, always
 * terminated) and returns buf.
 */
const char *log_one_line(const char *msg, char *buf, size_t len);

void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * One line per answered request.  delivery_id, job_id, event_id and
 * event_type (a Stripe event's) may be NULL; they come from the client and
 * are escaped before they reach the log.
 */
void log_request(const char *method, const char *path, unsigned int status, double duration_seconds,
				 const char *delivery_id, const char *job_id, const char *event_id,
				 const char *event_type);

/* A field of log_event. */
struct log_field
{
	const char *key;
	const char *value;  /* NULL: the field is left out */
	bool        number; /* a JSON number in the json format (value is its digits) */
};

/*
 * One line with a message and up to LOG_EVENT_FIELDS_MAX fields, in either
 * format; values are escaped like those of log_request.  level is "info",
 * "warning" or "error".
 */
#define LOG_EVENT_FIELDS_MAX 12
void log_event(const char *level, const char *msg, const struct log_field *fields, int nfields);

#endif
