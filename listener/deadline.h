/*
 * deadline.h - absolute deadlines as struct timespec, for poll timeouts and
 * pthread_cond_timedwait (which takes a time on the condition's clock).
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

#endif
