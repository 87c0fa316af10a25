/*
 * dispatch.h - the dispatcher's loop: claim jobs, dispatch each to GitHub,
 * record the answer, reconcile what a crash left behind.
 */
#ifndef PROVISION_DISPATCH_H
#define PROVISION_DISPATCH_H

#include "config.h"

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

/* Jobs dispatched longer ago than this without a run are looked for on GitHub... */
#define ORPHAN_AFTER_S 60
/* ...and dispatched again when no run turned up for this long. */
#define RESEND_AFTER_S 120
/* Runs listed per reconciliation at most (pages of 100). */
#define RECONCILE_MAX_PAGES 10

struct dispatcher;

/* What the signal handlers tell the loop; the handlers only set these. */
struct dispatcher_signals
{
	volatile sig_atomic_t stop;    /* SIGTERM, SIGINT */
	volatile sig_atomic_t reload;  /* SIGHUP */
	int                   wake_fd; /* read end of the handlers' self-pipe */
};

struct dispatcher *dispatcher_new(struct config *cfg, char *err, size_t errlen);
void               dispatcher_free(struct dispatcher *d);

/*
 * Runs until sig->stop: then finishes the call in flight, records the
 * answers it has (up to --shutdown-timeout when the database is down),
 * claims nothing more and returns.
 */
void dispatcher_run(struct dispatcher *d, struct dispatcher_signals *sig);

/* For /readyz, from any thread: true, or false with the reason. */
bool dispatcher_ready(void *d, char *reason, size_t len);

#endif
