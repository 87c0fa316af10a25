/*
 * log.c - leveled logging to stderr.
 *
 * Text lines are "ts=... level=... msg=..." followed by key=value fields;
 * values that are not plain tokens are quoted and escaped, so a header value
 * chosen by a client cannot forge or split a log line.  The JSON format
 * builds each line with cJSON for the same reason.  Each line goes out in a
 * single write so lines from different threads never interleave.
 */
#include "log.h"

#include "options.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_VALUE_MAX  200  /* characters kept of a field's value */
#define LOG_MSG_MAX    1024 /* characters kept of a message */
#define LOG_FIELDS_MAX 10   /* ts, level and the request's eight */

/*
 * Room for the worst case, every character escaped to four, so no field is
 * ever cut off the end of a line: keys are short, and 32 bytes per field
 * cover a key, "=", the quotes and the separating space.
 */
#define LOG_LINE_MAX (LOG_MSG_MAX * 4 + LOG_FIELDS_MAX * (LOG_VALUE_MAX * 4 + 32) + 64)

static enum log_format log_format = LOG_FORMAT_TEXT;

void
log_set_format(enum log_format format)
{
	log_format = format;
}

void
log_libmicrohttpd(void *cls, const char *fmt, va_list ap)
{
	static const char *const client_noise[] = {
		"closed",         "timed out",  "timeout", "Connection reset", "Failed to receive",
		"Failed to send", "Broken pipe"};
	char   msg[512];
	size_t len;

	(void) cls;
	vsnprintf(msg, sizeof msg, fmt, ap);
	for (size_t i = 0; i < sizeof client_noise / sizeof client_noise[0]; i++)
		if (strstr(msg, client_noise[i]) != NULL)
			return;
	len = strlen(msg);
	while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
		msg[--len] = '\0';
	log_warn("libmicrohttpd: %s", msg);
}

bool
log_format_option(const struct opt_spec *opt, void *cfg, const char *value, bool from_env,
				  char *err, size_t errlen)
{
	enum log_format *format = opt_field(opt, cfg);
	char             name[64];

	if (strcmp(value, "text") == 0)
		*format = LOG_FORMAT_TEXT;
	else if (strcmp(value, "json") == 0)
		*format = LOG_FORMAT_JSON;
	else
	{
		snprintf(err, errlen, "invalid %s \"%.64s\": expected text or json",
				 opt_origin(opt, from_env, name, sizeof name), value);
		return false;
	}
	return true;
}

static void
format_timestamp(char *buf, size_t len)
{
	struct timespec ts;
	struct tm       tm;
	size_t          n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, len - n, ".%03dZ", (int) (ts.tv_nsec / 1000000) % 1000);
}

static void
write_line(const char *line, size_t len)
{
	while (len > 0)
	{
		ssize_t n = write(STDERR_FILENO, line, len);

		if (n <= 0)
			return;
		line += n;
		len -= (size_t) n;
	}
}

/* Appends " key=value" to buf, quoting and escaping value when needed. */
static void
append_field(char *buf, size_t *used, size_t cap, const char *key, const char *value, size_t limit)
{
	size_t pos = *used;
	bool   plain = value[0] != '\0';
	int    n;

	for (const char *p = value; *p && plain; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (c <= ' ' || c >= 0x7f || c == '"' || c == '=' || c == '\\')
			plain = false;
	}

	n = snprintf(buf + pos, cap - pos, " %s=%s", key, plain ? "" : "\"");
	if (n < 0 || (size_t) n >= cap - pos)
		return;
	pos += (size_t) n;

	for (size_t i = 0; value[i] && i < limit && pos + 5 < cap; i++)
	{
		unsigned char c = (unsigned char) value[i];

		if (c < ' ' || c >= 0x7f || c == '"' || c == '\\')
			pos += (size_t) snprintf(buf + pos, cap - pos, "\\x%02x", c);
		else
			buf[pos++] = (char) c;
	}
	if (!plain && pos + 1 < cap)
		buf[pos++] = '"';
	buf[pos] = '\0';
	*used = pos;
}

/* Starts a text line with the fields every line has: ts, level, msg. */
static void
text_head(char *line, size_t *used, size_t cap, const char *level, const char *msg)
{
	char ts[32];

	format_timestamp(ts, sizeof ts);
	line[0] = '\0';
	append_field(line, used, cap, "ts", ts, LOG_VALUE_MAX);
	append_field(line, used, cap, "level", level, LOG_VALUE_MAX);
	append_field(line, used, cap, "msg", msg, LOG_MSG_MAX);
}

/*
 * Ends a text line and writes it, without the leading space of its first
 * field; line has room for the newline past the cap given to text_head.
 */
static void
text_write(char *line, size_t used)
{
	line[used++] = '\n';
	write_line(line + 1, used - 1);
}

/* Starts a JSON line with the members every line has; NULL without memory. */
static cJSON *
json_head(const char *level, const char *msg)
{
	cJSON *obj = cJSON_CreateObject();
	char   ts[32];

	if (obj == NULL)
		return NULL;
	format_timestamp(ts, sizeof ts);
	cJSON_AddStringToObject(obj, "ts", ts);
	cJSON_AddStringToObject(obj, "level", level);
	cJSON_AddStringToObject(obj, "msg", msg);
	return obj;
}

/* Prints obj as one line, writes it, and frees obj. */
static void
json_write(cJSON *obj)
{
	char  *text = cJSON_PrintUnformatted(obj);
	char  *line;
	size_t len;

	cJSON_Delete(obj);
	if (text == NULL)
		return;
	len = strlen(text);
	line = malloc(len + 1);
	if (line != NULL)
	{
		memcpy(line, text, len);
		line[len] = '\n';
		write_line(line, len + 1);
		free(line);
	}
	cJSON_free(text);
}

static void
emit_text(const char *level, const char *msg, const char *const *fields, int nfields)
{
	char   line[LOG_LINE_MAX];
	size_t used = 0;

	assert(nfields / 2 + 2 <= LOG_FIELDS_MAX);

	text_head(line, &used, sizeof line - 1, level, msg);
	for (int i = 0; i + 1 < nfields; i += 2)
		if (fields[i + 1] != NULL)
			append_field(line, &used, sizeof line - 1, fields[i], fields[i + 1], LOG_VALUE_MAX);
	text_write(line, used);
}

/*
 * status and duration are numbers in JSON so log processors can aggregate
 * them; has_request says whether they belong in the line at all.
 */
static void
emit_json(const char *level, const char *msg, const char *const *fields, int nfields,
		  bool has_request, unsigned int status, double duration)
{
	cJSON *obj = json_head(level, msg);

	if (obj == NULL)
		return;
	for (int i = 0; i + 1 < nfields; i += 2)
		if (fields[i + 1] != NULL)
			cJSON_AddStringToObject(obj, fields[i], fields[i + 1]);
	if (has_request)
	{
		cJSON_AddNumberToObject(obj, "status", status);
		cJSON_AddNumberToObject(obj, "duration_s", duration);
	}
	json_write(obj);
}

const char *
log_one_line(const char *msg, char *buf, size_t len)
{
	size_t used = 0;

	if (len == 0)
		return buf;
	buf[0] = '\0';
	while (*msg != '\0')
	{
		size_t n = strcspn(msg, "\n");

		if (msg[0] != '\t' && n > 0)
		{
			int w = snprintf(buf + used, len - used, "%s%.*s", used > 0 ? "; " : "", (int) n, msg);

			if (w < 0 || (size_t) w >= len - used)
			{
				used = len - 1;
				break;
			}
			used += (size_t) w;
		}
		msg += n;
		if (*msg == '\n')
			msg++;
	}
	buf[used] = '\0';
	return buf;
}

static void
log_message(const char *level, const char *fmt, va_list ap)
{
	char msg[LOG_MSG_MAX + 1];

	vsnprintf(msg, sizeof msg, fmt, ap);
	if (log_format == LOG_FORMAT_JSON)
		emit_json(level, msg, NULL, 0, false, 0, 0);
	else
		emit_text(level, msg, NULL, 0);
}

void
log_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_message("error", fmt, ap);
	va_end(ap);
}

void
log_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_message("warning", fmt, ap);
	va_end(ap);
}

void
log_info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_message("info", fmt, ap);
	va_end(ap);
}

void
log_request(const char *method, const char *path, unsigned int status, double duration_seconds,
			const char *delivery_id, const char *job_id, const char *event_id,
			const char *event_type)
{
	char status_text[16];
	char duration_text[32];

	if (log_format == LOG_FORMAT_JSON)
	{
		const char *fields[] = {"method", method, "path",     path,     "delivery_id", delivery_id,
								"job_id", job_id, "event_id", event_id, "event_type",  event_type};

		emit_json("info", "request", fields, (int) (sizeof fields / sizeof fields[0]), true, status,
				  duration_seconds);
	}
	else
	{
		const char *fields[] = {"method",      method,      "path",       path,
								"status",      status_text, "duration_s", duration_text,
								"delivery_id", delivery_id, "job_id",     job_id,
								"event_id",    event_id,    "event_type", event_type};

		snprintf(status_text, sizeof status_text, "%u", status);
		snprintf(duration_text, sizeof duration_text, "%.6f", duration_seconds);
		emit_text("info", "request", fields, (int) (sizeof fields / sizeof fields[0]));
	}
}

/* Room as in LOG_LINE_MAX, for ts, level and LOG_EVENT_FIELDS_MAX fields. */
#define LOG_EVENT_LINE_MAX                                                                         \
	(LOG_MSG_MAX * 4 + (LOG_EVENT_FIELDS_MAX + 2) * (LOG_VALUE_MAX * 4 + 32) + 64)

/* A JSON number as strict JSON writes it, so it can go into a line raw. */
static bool
json_number_text(const char *s)
{
	if (*s == '-')
		s++;
	if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9'))
		return false;
	while (*s >= '0' && *s <= '9')
		s++;
	if (*s == '.')
	{
		s++;
		if (*s < '0' || *s > '9')
			return false;
		while (*s >= '0' && *s <= '9')
			s++;
	}
	return *s == '\0';
}

void
log_event(const char *level, const char *msg, const struct log_field *fields, int nfields)
{
	if (nfields > LOG_EVENT_FIELDS_MAX)
		nfields = LOG_EVENT_FIELDS_MAX;
	if (log_format == LOG_FORMAT_JSON)
	{
		cJSON *obj = json_head(level, msg);

		if (obj == NULL)
			return;
		for (int i = 0; i < nfields; i++)
		{
			if (fields[i].value == NULL)
				continue;
			/* raw digits keep 64-bit ids exact, which a double would not */
			if (fields[i].number && json_number_text(fields[i].value))
				cJSON_AddRawToObject(obj, fields[i].key, fields[i].value);
			else
				cJSON_AddStringToObject(obj, fields[i].key, fields[i].value);
		}
		json_write(obj);
	}
	else
	{
		char  *line = malloc(LOG_EVENT_LINE_MAX);
		size_t used = 0;
		size_t cap = LOG_EVENT_LINE_MAX - 1;

		if (line == NULL)
			return;
		text_head(line, &used, cap, level, msg);
		for (int i = 0; i < nfields; i++)
			if (fields[i].value != NULL)
				append_field(line, &used, cap, fields[i].key, fields[i].value, LOG_VALUE_MAX);
		text_write(line, used);
		free(line);
	}
}
