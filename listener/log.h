/*
 * log.h - leveled logging to stderr, as text (key=value) or one JSON object
 * per line.
 */
#ifndef PROVISION_LOG_H
#define PROVISION_LOG_H

#include <stdbool.h>

enum log_format
{
	LOG_FORMAT_TEXT,
	LOG_FORMAT_JSON
};

void log_set_format(enum log_format format);

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

#endif
