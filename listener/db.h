/*
 * db.h - the database side: a pool of libpq connections, a bounded queue of
 * work, and the worker threads that serve it.
 *
 * The HTTP thread never touches the database.  It hands a fully received and
 * verified request to db_submit(); a worker borrows a pool connection, runs
 * the one SQL call, fills in the answer and calls the job's done() callback.
 */
#ifndef PROVISION_DB_H
#define PROVISION_DB_H

#include "config.h"

#include <stdbool.h>
#include <time.h>

enum db_job_kind
{
	DB_JOB_CALLBACK, /* provision.handle_callback(payload, delivery) */
	DB_JOB_STRIPE,   /* provision.handle_stripe_event(payload) */
	DB_JOB_READY     /* /readyz, answered from the readiness probe */
};

struct db_job
{
	enum db_job_kind kind;
	/* inputs: NUL-terminated, owned by the submitter */
	const char *payload;
	const char *delivery_id;    /* NULL: no deduplication */
	const char *payload_job_id; /* for the 409 body; may be NULL */

	/* outputs, valid in done() */
	unsigned int status;
	char        *body;        /* JSON text; release with cJSON_free */
	unsigned int retry_after; /* seconds; 0 for no Retry-After */
	char         job_id[64];  /* from the result, for the log */

	void (*done)(struct db_job *job);

	/* owned by the pool */
	struct timespec deadline; /* for a pool connection (--pool-wait) */
	struct db_job  *next;
};

struct db_pool;

/*
 * Creates the pool and starts the workers.  Connections that cannot be made
 * now are retried on demand, so the listener can start before the database.
 */
struct db_pool *db_pool_open(const struct config *cfg, char *err, size_t errlen);

/*
 * Queues a job; false when the queue is full or the pool is closing (the
 * caller answers 503 itself).  A DB_JOB_READY job never enters the queue:
 * it is answered from the readiness probe, at once (done() runs before
 * db_submit returns) when its last result is fresh, else when the probe
 * running for it ends.
 */
bool db_submit(struct db_pool *pool, struct db_job *job);

/*
 * Runs every queued job and stops the workers; from then on db_submit()
 * refuses work, but the pool stays valid for callers still holding it.
 */
void db_pool_stop(struct db_pool *pool);

/* Stops the workers if still running, closes the connections, frees. */
void db_pool_close(struct db_pool *pool);

#endif
