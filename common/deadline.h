/*
 * deadline.h - time for the daemons' waits: the listener's absolute
 * deadlines as struct timespec, for poll timeouts and pthread_cond_timedwait
 * (which takes a time on the condition's clock), and the dispatcher's
 * seconds as a double.  The one place either does arithmetic on a timespec.
 */
#ifndef PROVISION_DEADLINE_H
#define PROVISION_DEADLINE_H

#include <stdbool.h>
#include <time.h>

/* Sets *t to ms milliseconds from now on the given clock. */
static inline void
deadline_after_ms(struct timespec *t, clockid_t clock, long ms)
{
	clock_gettime(clock, t);
	t->tv_sec += ms / 1000;
	t->tv_nsec += (ms % 1000) * 1000000;
	if (t->tv_nsec >= 1000000000)
	{
		t->tv_sec++;
		t->tv_nsec -= 1000000000;
	}
}

/* True when a comes before b. */
static inline bool
deadline_before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* True once now has reached t. */
static inline bool
deadline_passed(const struct timespec *t, const struct timespec *now)
{
	return !deadline_before(now, t);
}

/* Milliseconds from now until t on the given clock; negative once past. */
static inline long
deadline_ms_left(const struct timespec *t, clockid_t clock)
{
	struct timespec now;

	clock_gettime(clock, &now);
	return (long) (t->tv_sec - now.tv_sec) * 1000 + (t->tv_nsec - now.tv_nsec) / 1000000;
}

/* Seconds since t on the given clock, for durations in logs and metrics. */
static inline double
deadline_seconds_since(const struct timespec *t, clockid_t clock)
{
	struct timespec now;

	clock_gettime(clock, &now);
	return (double) (now.tv_sec - t->tv_sec) + (now.tv_nsec - t->tv_nsec) / 1e9;
}

/* Seconds on CLOCK_MONOTONIC, for deadlines and backoffs kept as a double. */
static inline double
monotonic_seconds(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double) now.tv_sec + now.tv_nsec / 1e9;
}

#endif
