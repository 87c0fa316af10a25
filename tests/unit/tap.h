/*
 * tap.h - a minimal Test Anything Protocol producer for the listener's unit
 * tests, so prove(1) can run every test binary.
 */
#ifndef PROVISION_TAP_H
#define PROVISION_TAP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int tap_run;
static int tap_failed;

static bool
tap_result(bool pass, const char *fmt, va_list ap)
{
	tap_run++;
	if (!pass)
		tap_failed++;
	printf("%sok %d - ", pass ? "" : "not ", tap_run);
	vprintf(fmt, ap);
	printf("\n");
	fflush(stdout);
	return pass;
}

static bool ok(bool pass, const char *fmt, ...) __attribute__((format(printf, 2, 3), unused));
static bool
ok(bool pass, const char *fmt, ...)
{
	va_list ap;
	bool    r;

	va_start(ap, fmt);
	r = tap_result(pass, fmt, ap);
	va_end(ap);
	return r;
}

static bool is_int(long got, long want, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), unused));
static bool
is_int(long got, long want, const char *fmt, ...)
{
	va_list ap;
	bool    r;

	va_start(ap, fmt);
	r = tap_result(got == want, fmt, ap);
	va_end(ap);
	if (!r)
		printf("#          got: %ld\n#     expected: %ld\n", got, want);
	return r;
}

static bool is_str(const char *got, const char *want, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), unused));
static bool
is_str(const char *got, const char *want, const char *fmt, ...)
{
	va_list ap;
	bool    r;
	bool    same =
		(got == NULL && want == NULL) || (got != NULL && want != NULL && strcmp(got, want) == 0);

	va_start(ap, fmt);
	r = tap_result(same, fmt, ap);
	va_end(ap);
	if (!r)
		printf("#          got: %s\n#     expected: %s\n", got ? got : "(null)",
			   want ? want : "(null)");
	return r;
}

/* Prints the plan and returns the exit status for main(). */
/*
 * A fake environment for parsers that take a getenv-like function:
 * tap_env is a NULL-terminated list of NAME=value entries (NULL: empty),
 * and tap_getenv looks names up in it.
 */
static const char *const *tap_env;

static char *tap_getenv(const char *name) __attribute__((unused));
static char *
tap_getenv(const char *name)
{
	size_t len = strlen(name);

	for (const char *const *e = tap_env; e != NULL && *e != NULL; e++)
		if (strncmp(*e, name, len) == 0 && (*e)[len] == '=')
			return (char *) *e + len + 1;
	return NULL;
}

/* Runs fn with stderr captured into buf (NUL-terminated, truncated to fit). */
static void __attribute__((unused)) tap_capture_stderr(void (*fn)(void), char *buf, size_t len)
{
	char    path[] = "/tmp/provision-test-stderr-XXXXXX";
	int     fd = mkstemp(path);
	int     saved = dup(STDERR_FILENO);
	ssize_t n;

	fflush(stderr);
	dup2(fd, STDERR_FILENO);
	fn();
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	lseek(fd, 0, SEEK_SET);
	n = read(fd, buf, len - 1);
	buf[n > 0 ? n : 0] = '\0';
	close(fd);
	unlink(path);
}

static int __attribute__((unused)) done_testing(void)
{
	printf("1..%d\n", tap_run);
	return tap_failed == 0 ? 0 : 1;
}

#endif
