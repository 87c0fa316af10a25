/*
 * test_deadline.c - the timespec arithmetic every listener wait uses:
 * nanosecond carry, ordering, time left and time since.
 */
#include "deadline.h"
#include "tap.h"

static void
test_order(void)
{
	struct timespec a = {10, 999999999};
	struct timespec b = {11, 0};
	struct timespec c = {11, 0};

	ok(deadline_before(&a, &b), "before: a second's last nanosecond is before the next second");
	ok(!deadline_before(&b, &a), "before: not the other way");
	ok(!deadline_before(&b, &c), "before: equal is not before");
	ok(deadline_passed(&b, &c), "passed: reached at the same instant");
	ok(deadline_passed(&a, &b), "passed: after it");
	ok(!deadline_passed(&b, &a), "passed: not yet");
}

static void
test_after(void)
{
	struct timespec now;
	struct timespec t;
	long            left;
	double          since;

	for (long ms = 0; ms <= 2999; ms += 37)
	{
		deadline_after_ms(&t, CLOCK_MONOTONIC, ms);
		if (t.tv_nsec < 0 || t.tv_nsec >= 1000000000)
			break;
	}
	ok(t.tv_nsec >= 0 && t.tv_nsec < 1000000000, "after: nanoseconds stay normalized");

	deadline_after_ms(&t, CLOCK_MONOTONIC, 5000);
	left = deadline_ms_left(&t, CLOCK_MONOTONIC);
	ok(left > 4000 && left <= 5000, "ms left: 5000 set, %ld left", left);
	clock_gettime(CLOCK_MONOTONIC, &now);
	ok(!deadline_passed(&t, &now), "passed: a deadline 5s away has not");

	deadline_after_ms(&t, CLOCK_MONOTONIC, -1500);
	left = deadline_ms_left(&t, CLOCK_MONOTONIC);
	ok(left <= -1500 && left > -2500, "ms left: negative once past (%ld)", left);
	since = deadline_seconds_since(&t, CLOCK_MONOTONIC);
	ok(since >= 1.5 && since < 2.5, "seconds since: 1.5s ago (%g)", since);
	{
		double seconds = monotonic_seconds();

		clock_gettime(CLOCK_MONOTONIC, &now);
		ok(seconds <= (double) now.tv_sec + now.tv_nsec / 1e9 && seconds > (double) now.tv_sec - 1,
		   "monotonic seconds: the monotonic clock as a double (%f)", seconds);
	}

	deadline_after_ms(&t, CLOCK_REALTIME, 1000);
	left = deadline_ms_left(&t, CLOCK_REALTIME);
	ok(left > 0 && left <= 1000, "ms left: on the clock it was set on (%ld)", left);
}

int
main(void)
{
	test_order();
	test_after();
	return done_testing();
}
