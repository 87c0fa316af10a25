/*
 * fuzz_log.c - the request log line, which carries client-chosen values (the
 * path, the delivery id header, the job_id of the body) and must neither
 * split into several lines nor let a value forge another field.
 *
 * Input: method '\n' path '\n' delivery_id '\n' job_id '\n' then bytes: the
 * first selects the text or JSON format and the status, the second the
 * duration, the rest is a free-form log message.  The four values are cut to
 * the sizes of the fields http.c keeps them in: log.c alone does not promise
 * that longer ones leave room for every field on the 2 KB line.  stderr is captured around each call (sanitizer
 * reports keep going to the real stderr).  Properties, text format: exactly
 * one line of printable ASCII whose fields, read with the quoting rules, are
 * ts, level, msg, method, path, status, duration_s, then delivery_id,
 * job_id, event_id and event_type when given, in that order, and nothing
 * else (the delivery id and job_id values are logged once as a callback's
 * and once as a Stripe event's id and type).  JSON format: one line
 * that parses to an object holding every value exactly as given.
 */
#define _GNU_SOURCE
#include "fuzz.h"
#include "log.h"

#include <cjson/cJSON.h>
#include <sys/mman.h>
#include <unistd.h>

void __sanitizer_set_report_fd(void *fd) __attribute__((weak));

static int    capture_fd = -1;
static int    stderr_fd = -1;
static char  *captured;
static size_t captured_cap = 1 << 16;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void) argc;
	(void) argv;
	capture_fd = memfd_create("fuzz_log", 0);
	stderr_fd = dup(STDERR_FILENO);
	captured = malloc(captured_cap);
	if (capture_fd < 0 || stderr_fd < 0 || captured == NULL)
	{
		perror("fuzz_log: setting up the capture");
		abort();
	}
	/* absent in the replay build, which has no sanitizer runtime */
	if (__sanitizer_set_report_fd)
		__sanitizer_set_report_fd((void *) (intptr_t) stderr_fd);
	return 0;
}

static void
capture_start(void)
{
	fuzz_check(ftruncate(capture_fd, 0) == 0);
	fuzz_check(lseek(capture_fd, 0, SEEK_SET) == 0);
	fuzz_check(dup2(capture_fd, STDERR_FILENO) == STDERR_FILENO);
}

static size_t
capture_end(void)
{
	ssize_t n;

	fuzz_check(dup2(stderr_fd, STDERR_FILENO) == STDERR_FILENO);
	n = pread(capture_fd, captured, captured_cap - 1, 0);
	fuzz_check(n >= 0);
	captured[n] = '\0';
	return (size_t) n;
}

/* One line: ends with its only newline, nothing else outside printable ASCII. */
static void
check_text_line(const char *line, size_t len)
{
	fuzz_check(len > 0 && line[len - 1] == '\n');
	for (size_t i = 0; i + 1 < len; i++)
		fuzz_check((unsigned char) line[i] >= ' ' && (unsigned char) line[i] < 0x7f);
}

/*
 * Reads the key of each space-separated key=value field (quoted values may
 * hold spaces) and checks them against the expected sequence.
 */
static void
check_text_fields(const char *line, size_t len, const char *const *keys, int nkeys)
{
	size_t pos = 0;
	int    k = 0;

	while (pos < len - 1)
	{
		size_t start = pos;

		while (pos < len - 1 && line[pos] != '=')
		{
			fuzz_check(line[pos] == '_' || (line[pos] >= 'a' && line[pos] <= 'z'));
			pos++;
		}
		fuzz_check(pos < len - 1);
		fuzz_check(k < nkeys && strlen(keys[k]) == pos - start &&
				   memcmp(line + start, keys[k], pos - start) == 0);
		k++;
		pos++;
		if (line[pos] == '"')
		{
			pos++;
			while (pos < len - 1 && line[pos] != '"')
			{
				fuzz_check(line[pos] != '\\' || line[pos + 1] == 'x');
				pos++;
			}
			fuzz_check(pos < len - 1);
			pos++;
		}
		else
			while (pos < len - 1 && line[pos] != ' ')
				pos++;
		if (pos < len - 1)
		{
			fuzz_check(line[pos] == ' ');
			pos++;
		}
	}
	fuzz_check(k == nkeys);
}

static void
check_json_member(const cJSON *obj, const char *key, const char *value)
{
	const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);

	if (value == NULL)
		fuzz_check(item == NULL);
	else
		fuzz_check(cJSON_IsString(item) && strcmp(item->valuestring, value) == 0);
}

static void
check_request(bool json, const char *method, const char *path, unsigned int status, double duration,
			  const char *delivery, const char *job, const char *event_id, const char *event_type)
{
	size_t len;

	capture_start();
	log_request(method, path, status, duration, delivery, job, event_id, event_type);
	len = capture_end();
	if (!json)
	{
		const char *keys[11] = {"ts", "level", "msg", "method", "path", "status", "duration_s"};
		int         nkeys = 7;

		if (delivery != NULL)
			keys[nkeys++] = "delivery_id";
		if (job != NULL)
			keys[nkeys++] = "job_id";
		if (event_id != NULL)
			keys[nkeys++] = "event_id";
		if (event_type != NULL)
			keys[nkeys++] = "event_type";
		check_text_line(captured, len);
		check_text_fields(captured, len, keys, nkeys);
	}
	else
	{
		cJSON *obj;

		fuzz_check(len > 0 && captured[len - 1] == '\n' && memchr(captured, '\n', len - 1) == NULL);
		captured[len - 1] = '\0';
		obj = cJSON_Parse(captured);
		fuzz_check(cJSON_IsObject(obj));
		check_json_member(obj, "method", method);
		check_json_member(obj, "path", path);
		check_json_member(obj, "delivery_id", delivery);
		check_json_member(obj, "job_id", job);
		check_json_member(obj, "event_id", event_id);
		check_json_member(obj, "event_type", event_type);
		fuzz_check(cJSON_GetObjectItemCaseSensitive(obj, "status")->valuedouble == status);
		cJSON_Delete(obj);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_fields f;
	const char        *method;
	const char        *path;
	const char        *delivery;
	const char        *job;
	bool               json;
	unsigned int       status;
	double             duration;
	char              *msg;
	size_t             len;

	fuzz_split(data, size, 4, &f);
	/* the longest values http.c can pass (the sizes of its request fields) */
	for (int i = 0; i < 4; i++)
	{
		static const size_t bound[] = {15, 255, 255, 63};

		if (f.str[i] != NULL && strlen(f.str[i]) > bound[i])
			f.str[i][bound[i]] = '\0';
	}
	method = f.str[0] ? f.str[0] : "POST";
	path = f.str[1] ? f.str[1] : "/webhooks/github";
	delivery = f.str[2];
	job = f.str[3];
	json = f.raw_len > 0 && (f.raw[0] & 1);
	status = f.raw_len > 0 ? 100 + f.raw[0] * 2 : 200;
	/* up to the longest a request may take (--request-timeout at most 1 h) */
	duration = f.raw_len > 1 ? f.raw[1] * 14.117647 : 0.25;
	msg = malloc(f.raw_len + 1);
	if (f.raw_len > 1)
		memcpy(msg, f.raw + 1, f.raw_len - 1);
	msg[f.raw_len > 1 ? f.raw_len - 1 : 0] = '\0';

	log_set_format(json ? LOG_FORMAT_JSON : LOG_FORMAT_TEXT);
	/* a callback's line, then a Stripe event's with the same values */
	check_request(json, method, path, status, duration, delivery, job, NULL, NULL);
	check_request(json, method, path, status, duration, NULL, job, delivery, job);

	capture_start();
	log_info("%s", msg);
	len = capture_end();
	if (!json)
	{
		const char *keys[] = {"ts", "level", "msg"};

		check_text_line(captured, len);
		check_text_fields(captured, len, keys, 3);
	}
	else
		fuzz_check(len > 0 && captured[len - 1] == '\n' && memchr(captured, '\n', len - 1) == NULL);

	free(msg);
	fuzz_free(&f);
	return 0;
}
