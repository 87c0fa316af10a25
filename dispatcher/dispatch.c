/*
 * dispatch.c - the dispatcher's loop.
 *
 * A claimed job is held in memory until the answer to its dispatch is
 * recorded in the database: first it is sent (phase SEND, again after a
 * transient failure or a rate-limit pause), then its outcome is written
 * (RECORD: record_dispatch; FAIL: update_job_status 'failed').  The
 * database is the only state that outlives the process: a job whose
 * dispatcher died is a dispatched job without a run, which any
 * dispatcher's reconciliation adopts a run for or sends again.
 *
 * While a dispatcher holds a job it holds a session advisory lock on it
 * (db.h), and reconciliation skips locked jobs, so two dispatchers never
 * work on one job at the same time.
 */
#include "dispatch.h"

#include "answer.h"
#include "db.h"
#include "deadline.h"
#include "github.h"
#include "log.h"
#include "metrics.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RECONCILE_BATCH  100
#define AUTH_BACKOFF_MAX 60.0
#define WAIT_MAX_MS      60000

enum phase
{
	PHASE_SEND,   /* to be sent at next_try */
	PHASE_RECORD, /* accepted: record_dispatch */
	PHASE_FAIL    /* refused or given up: update_job_status failed */
};

struct held_job
{
	char       id[UUID_TEXT];
	char       agent_id[UUID_TEXT];
	enum phase phase;
	bool       locked;      /* holds its advisory lock on the current session */
	bool       run_details; /* still asks for return_run_details */
	bool       renewed;     /* the one token renewal after a 401 is used */
	bool       resend;      /* taken over by reconciliation */
	int        calls;       /* dispatch calls made, the log's attempt */
	int        failures;    /* transient failures in a row */
	double     first_failure;
	double     next_try; /* monotonic */
	long long  run_id;
	char       run_url[512];
	char       error[700];
};

/* A job this process dispatched without learning its run, and when. */
struct sent_mark
{
	char   id[UUID_TEXT];
	double at;
};

struct dispatcher
{
	struct config    *cfg;
	struct db        *db;
	struct github    *gh;
	struct held_job  *jobs;
	int               njobs;
	int               cap;
	struct sent_mark *sent;
	int               nsent;
	int               sent_cap;
	double            next_poll;
	bool              poll_now;
	bool              run_details;  /* false once the API refused return_run_details */
	time_t            paused_until; /* wall clock; 0 when not paused */
	bool              auth_ok;
	double            next_auth;
	double            auth_backoff;
	char              auth_error[600];
	char              poll_error[600];
	bool              stopping;
	uint64_t          rng;
	pthread_mutex_t   ready_lock;
	bool              ready;
	char              ready_reason[700];
};

/* xorshift64*: jitter only needs to differ between dispatchers. */
static double
random01(struct dispatcher *d)
{
	d->rng ^= d->rng >> 12;
	d->rng ^= d->rng << 25;
	d->rng ^= d->rng >> 27;
	return (double) ((d->rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

struct dispatcher *
dispatcher_new(struct config *cfg, char *err, size_t errlen)
{
	struct dispatcher *d = calloc(1, sizeof *d);
	struct timespec    ts;

	if (d == NULL)
	{
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	d->cfg = cfg;
	d->db = db_new(cfg);
	d->gh = github_new(cfg, err, errlen);
	if (d->db == NULL || d->gh == NULL)
	{
		if (d->db == NULL)
			snprintf(err, errlen, "out of memory");
		dispatcher_free(d);
		return NULL;
	}
	d->run_details = true;
	d->auth_ok = cfg->auth != AUTH_APP;
	d->auth_backoff = 1;
	clock_gettime(CLOCK_REALTIME, &ts);
	d->rng = ((uint64_t) ts.tv_nsec << 20) ^ (uint64_t) ts.tv_sec ^ ((uint64_t) getpid() << 40);
	if (d->rng == 0)
		d->rng = 88172645463325252ULL;
	pthread_mutex_init(&d->ready_lock, NULL);
	snprintf(d->ready_reason, sizeof d->ready_reason, "starting");
	return d;
}

void
dispatcher_free(struct dispatcher *d)
{
	if (d == NULL)
		return;
	github_free(d->gh);
	db_free(d->db);
	free(d->jobs);
	free(d->sent);
	pthread_mutex_destroy(&d->ready_lock);
	free(d);
}

bool
dispatcher_ready(void *arg, char *reason, size_t len)
{
	struct dispatcher *d = arg;
	bool               ready;

	pthread_mutex_lock(&d->ready_lock);
	ready = d->ready;
	snprintf(reason, len, "%s", d->ready_reason);
	pthread_mutex_unlock(&d->ready_lock);
	return ready;
}

/* Readiness as /readyz reports it: the database, the poll, the credentials. */
static void
publish_readiness(struct dispatcher *d)
{
	char reason[sizeof d->ready_reason];
	bool ready = false;

	if (d->stopping)
		snprintf(reason, sizeof reason, "stopping");
	else if (!db_is_up(d->db))
		snprintf(reason, sizeof reason, "database unavailable: %s", db_down_reason(d->db));
	else if (d->poll_error[0] != '\0')
		snprintf(reason, sizeof reason, "%s", d->poll_error);
	else if (!d->auth_ok)
		snprintf(reason, sizeof reason, "no GitHub App installation token: %s", d->auth_error);
	else
	{
		ready = true;
		reason[0] = '\0';
	}
	pthread_mutex_lock(&d->ready_lock);
	d->ready = ready;
	snprintf(d->ready_reason, sizeof d->ready_reason, "%s", reason);
	pthread_mutex_unlock(&d->ready_lock);
}

/* ---- held jobs ---------------------------------------------------------- */

static struct held_job *
find_job(struct dispatcher *d, const char *id)
{
	for (int i = 0; i < d->njobs; i++)
		if (strcmp(d->jobs[i].id, id) == 0)
			return &d->jobs[i];
	return NULL;
}

static struct held_job *
add_job(struct dispatcher *d, const char *id, const char *agent_id, bool locked, bool resend)
{
	struct held_job *j;

	if (d->njobs == d->cap)
	{
		int              cap = d->cap > 0 ? d->cap * 2 : 16;
		struct held_job *jobs = realloc(d->jobs, (size_t) cap * sizeof *jobs);

		if (jobs == NULL)
			return NULL;
		d->jobs = jobs;
		d->cap = cap;
	}
	j = &d->jobs[d->njobs++];
	memset(j, 0, sizeof *j);
	snprintf(j->id, sizeof j->id, "%s", id);
	snprintf(j->agent_id, sizeof j->agent_id, "%s", agent_id);
	j->phase = PHASE_SEND;
	j->locked = locked;
	j->run_details = true;
	j->resend = resend;
	j->next_try = monotonic_seconds();
	metrics_set_held_jobs(d->njobs);
	return j;
}

static void
unlock_job(struct dispatcher *d, const char *id)
{
	struct db_error err;

	if (db_unlock_job(d->db, id, &err) == DB_SQL_ERROR)
		log_warn("cannot release the advisory lock of job %s: %s", id, err.message);
}

static void
remove_job(struct dispatcher *d, struct held_job *j)
{
	int i = (int) (j - d->jobs);

	if (j->locked && db_is_up(d->db))
		unlock_job(d, j->id);
	memmove(&d->jobs[i], &d->jobs[i + 1], (size_t) (d->njobs - i - 1) * sizeof *j);
	d->njobs--;
	metrics_set_held_jobs(d->njobs);
}

static int
count_phase(const struct dispatcher *d, enum phase phase)
{
	int n = 0;

	for (int i = 0; i < d->njobs; i++)
		if (d->jobs[i].phase == phase)
			n++;
	return n;
}

/* Remembers that the job was dispatched now without its run being known. */
static void
mark_sent(struct dispatcher *d, const char *id, double now)
{
	if (d->nsent == d->sent_cap)
	{
		int               cap = d->sent_cap > 0 ? d->sent_cap * 2 : 16;
		struct sent_mark *sent = realloc(d->sent, (size_t) cap * sizeof *sent);

		if (sent == NULL)
			return;
		d->sent = sent;
		d->sent_cap = cap;
	}
	snprintf(d->sent[d->nsent].id, sizeof d->sent[d->nsent].id, "%s", id);
	d->sent[d->nsent].at = now;
	d->nsent++;
}

/*
 * True when this process dispatched the job less than RESEND_AFTER_S ago:
 * its run may simply not be listed yet.
 */
static bool
recently_sent(struct dispatcher *d, const char *id, double now)
{
	int  kept = 0;
	bool found = false;

	for (int i = 0; i < d->nsent; i++)
	{
		if (now - d->sent[i].at >= RESEND_AFTER_S)
			continue;
		if (strcmp(d->sent[i].id, id) == 0)
			found = true;
		d->sent[kept++] = d->sent[i];
	}
	d->nsent = kept;
	return found;
}

/* ---- rate limits and credentials ----------------------------------------- */

static void
pause_until(struct dispatcher *d, time_t until)
{
	char when[32];

	if (until <= d->paused_until)
		return;
	format_utc_timestamp(until, when, sizeof when);
	log_warn("GitHub rate limit: no API call until %s (%lld s)", when,
			 (long long) (until - time(NULL)));
	if (d->paused_until == 0)
		metrics_rate_limit_pause();
	d->paused_until = until;
	metrics_set_paused(true);
}

static bool
paused(struct dispatcher *d)
{
	if (d->paused_until == 0)
		return false;
	if (time(NULL) < d->paused_until)
		return true;
	log_info("GitHub rate limit pause over");
	d->paused_until = 0;
	metrics_set_paused(false);
	return false;
}

/* Monotonic time at which a wall-clock pause ends. */
static double
pause_end(const struct dispatcher *d)
{
	return monotonic_seconds() + (double) (d->paused_until - time(NULL));
}

/*
 * With a GitHub App, makes sure an installation token is at hand (force:
 * a fresh one); false when there is none, and then no call is made.
 */
static bool
ensure_auth(struct dispatcher *d, bool force)
{
	struct token_decision t;
	double                now = monotonic_seconds();
	time_t                before = github_token_expires(d->gh);

	if (!github_uses_app(d->gh))
		return true;
	if (!force && !d->auth_ok && now < d->next_auth)
		return false;
	github_authenticate(d->gh, time(NULL), force, &t);
	switch (t.action)
	{
		case TOKEN_OK:
			if (github_token_expires(d->gh) != before || force)
			{
				char when[32];

				format_utc_timestamp(github_token_expires(d->gh), when, sizeof when);
				log_info("GitHub App installation token obtained, expires at %s", when);
			}
			d->auth_ok = true;
			d->auth_backoff = 1;
			d->auth_error[0] = '\0';
			return true;
		case TOKEN_PAUSE:
			pause_until(d, t.pause_until);
			break;
		case TOKEN_RETRY:
		case TOKEN_REFUSED:
			log_error("cannot obtain a GitHub App installation token: %s%s", t.error,
					  t.action == TOKEN_REFUSED
						  ? " (check --app-id, the App key and --installation-id)"
						  : "");
			break;
	}
	if (t.pause_until > 0 && t.action != TOKEN_PAUSE)
		pause_until(d, t.pause_until);
	snprintf(d->auth_error, sizeof d->auth_error, "%s", t.error);
	d->auth_ok = false;
	d->next_auth = now + d->auth_backoff;
	d->auth_backoff =
		d->auth_backoff * 2 < AUTH_BACKOFF_MAX ? d->auth_backoff * 2 : AUTH_BACKOFF_MAX;
	return false;
}

static void
reload_credentials(struct dispatcher *d)
{
	char err[600];

	if (config_reload_credentials(d->cfg, err, sizeof err))
		log_info("SIGHUP: credentials re-read from %s",
				 d->cfg->auth == AUTH_APP ? d->cfg->app_key_path : d->cfg->token_path);
	else if (err[0] != '\0')
		log_error("SIGHUP: keeping the credentials in use: %s", err);
	else
		log_warn("SIGHUP: the credentials came from the environment and cannot be read again; "
				 "restart to change them");
}

/* ---- one dispatch ---------------------------------------------------------- */

static void
log_dispatch(const struct held_job *j, const struct github_answer *ans,
			 enum dispatch_outcome outcome, const char *detail)
{
	char             status[16];
	char             run[24];
	char             duration[32];
	char             attempt[16];
	const char      *level = "info";
	struct log_field fields[9];
	int              n = 0;

	if (outcome == OUTCOME_FAILED || outcome == OUTCOME_GAVE_UP)
		level = "error";
	else if (outcome == OUTCOME_RETRY || outcome == OUTCOME_RATE_LIMITED)
		level = "warning";
	snprintf(status, sizeof status, "%ld", ans->a.status);
	snprintf(run, sizeof run, "%lld", j->run_id);
	snprintf(duration, sizeof duration, "%.6f", ans->seconds);
	snprintf(attempt, sizeof attempt, "%d", j->calls);
	fields[n++] = (struct log_field){"job_id", j->id, false};
	fields[n++] = (struct log_field){"status", ans->a.status != 0 ? status : NULL, true};
	fields[n++] = (struct log_field){"run_id", j->run_id > 0 ? run : NULL, true};
	fields[n++] = (struct log_field){"duration_s", duration, true};
	fields[n++] = (struct log_field){"attempt", attempt, true};
	fields[n++] = (struct log_field){"outcome", outcome_label(outcome), false};
	fields[n++] = (struct log_field){"reconciled", j->resend ? "true" : NULL, false};
	fields[n++] = (struct log_field){"error", detail != NULL && detail[0] ? detail : NULL, false};
	log_event(level, "dispatch", fields, n);
}

static void
send_one(struct dispatcher *d, struct held_job *j)
{
	struct github_answer     ans;
	struct dispatch_decision dec;
	struct dispatch_call     call;
	enum dispatch_outcome    outcome = OUTCOME_RETRY;
	const char              *detail = NULL;
	double                   now;

	if (!ensure_auth(d, false))
	{
		/* not the job's fault: it waits for a token without counting a failure */
		if (j->next_try < d->next_auth)
			j->next_try = d->next_auth;
		return;
	}
	call.asked_run_details = d->run_details && j->run_details;
	call.app_token = github_uses_app(d->gh);
	call.renewed = j->renewed;
	j->calls++;
	github_dispatch(d->gh, j->id, j->agent_id, call.asked_run_details, &ans);
	decide_dispatch(&ans.a, &call, time(NULL), &dec);
	now = monotonic_seconds();
	j->next_try = now;
	if (dec.pause_until > 0)
		pause_until(d, dec.pause_until);

	switch (dec.action)
	{
		case DISPATCH_RECORD:
			j->phase = PHASE_RECORD;
			j->run_id = dec.run_id;
			snprintf(j->run_url, sizeof j->run_url, "%s", dec.run_url);
			outcome = dec.run_id > 0 ? OUTCOME_RUN : OUTCOME_NO_RUN;
			if (dec.run_id == 0)
				mark_sent(d, j->id, now);
			if (dec.run_id == 0 && ans.a.status != 204)
				detail = "accepted without a usable workflow_run_id in the answer";
			break;
		case DISPATCH_RESEND_PLAIN:
			if (d->run_details)
				log_warn("the API does not take return_run_details (an older GitHub Enterprise "
						 "Server?): dispatching without it from now on; runs are then adopted by "
						 "reconciliation or fenced at their first callback");
			d->run_details = false;
			j->run_details = false;
			outcome = OUTCOME_FALLBACK;
			break;
		case DISPATCH_RENEW_TOKEN:
			j->renewed = true;
			outcome = OUTCOME_RENEWED;
			if (!ensure_auth(d, true) && j->next_try < d->next_auth)
				j->next_try = d->next_auth;
			break;
		case DISPATCH_PAUSE:
			outcome = OUTCOME_RATE_LIMITED;
			if (dec.pause_until == 0)
				pause_until(d, time(NULL) + RATE_LIMIT_DEFAULT_PAUSE_S);
			break;
		case DISPATCH_RETRY:
			if (j->failures++ == 0)
				j->first_failure = now;
			detail = dec.error;
			if (decide_backoff(j->failures, j->first_failure, now, d->cfg->give_up_ms / 1000.0,
							   random01(d), &j->next_try))
			{
				outcome = OUTCOME_RETRY;
				metrics_retry();
			}
			else
			{
				outcome = OUTCOME_GAVE_UP;
				j->phase = PHASE_FAIL;
				j->next_try = now;
				snprintf(j->error, sizeof j->error,
						 "dispatch: gave up after %.0f s of transient failures; last: %s",
						 now - j->first_failure, dec.error);
			}
			break;
		case DISPATCH_FAIL:
			outcome = OUTCOME_FAILED;
			j->phase = PHASE_FAIL;
			snprintf(j->error, sizeof j->error, "%s", dec.error);
			detail = dec.error;
			break;
	}
	metrics_dispatch(outcome);
	log_dispatch(j, &ans, outcome, outcome == OUTCOME_GAVE_UP ? j->error : detail);
	github_answer_free(&ans);
}

/* ---- recording outcomes ------------------------------------------------------ */

/*
 * Writes the outcome of every answered job whose turn has come (all of
 * them when force).  Stops at a lost connection: those outcomes wait for
 * the reconnect.
 */
static void
flush(struct dispatcher *d, bool force)
{
	double now = monotonic_seconds();

	for (int i = 0; i < d->njobs && db_is_up(d->db);)
	{
		struct held_job *j = &d->jobs[i];
		struct db_error  err;
		enum db_outcome  rc;
		bool             failed = false;

		if (j->phase == PHASE_SEND || (!force && j->next_try > now))
		{
			i++;
			continue;
		}
		if (j->phase == PHASE_RECORD)
			rc = db_record_dispatch(d->db, j->id, j->run_id, j->run_url, &err);
		else
			rc = db_fail_job(d->db, j->id, j->error, &failed, &err);
		if (rc == DB_DOWN)
			return;
		if (rc == DB_SQL_ERROR && strcmp(err.sqlstate, "55000") != 0)
		{
			log_error("job %s: cannot record the dispatch (%s): %s (SQLSTATE %s); trying again "
					  "in %ld ms",
					  j->id,
					  j->phase == PHASE_RECORD ? "provision.record_dispatch"
											   : "provision.update_job_status",
					  err.message, err.sqlstate, d->cfg->poll_ms);
			snprintf(d->poll_error, sizeof d->poll_error, "cannot record dispatches: %s",
					 err.message);
			j->next_try = now + d->cfg->poll_ms / 1000.0;
			i++;
			continue;
		}
		if (rc == DB_SQL_ERROR)
			log_warn("job %s: %s refused: %s", j->id,
					 j->phase == PHASE_RECORD ? "record_dispatch" : "update_job_status",
					 err.message);
		else if (j->phase == PHASE_FAIL && !failed)
			log_info("job %s not failed: it is no longer a dispatched job without a run", j->id);
		remove_job(d, j);
	}
}

/* ---- reconciliation -------------------------------------------------------- */

struct candidate
{
	struct orphan o;
	bool          sent_lately; /* by this process, less than RESEND_AFTER_S ago */
	bool          matched;
	long long     run_id;
	char          run_url[512];
};

static void
log_reconciled(const char *action, const struct candidate *c)
{
	char             run[24];
	char             age[32];
	struct log_field fields[4];

	snprintf(run, sizeof run, "%lld", c->run_id);
	snprintf(age, sizeof age, "%.0f", c->o.age_s);
	fields[0] = (struct log_field){"job_id", c->o.id, false};
	fields[1] = (struct log_field){"action", action, false};
	fields[2] = (struct log_field){"run_id", c->matched ? run : NULL, true};
	fields[3] = (struct log_field){"dispatched_s_ago", age, true};
	log_event(c->matched ? "info" : "warning", "reconcile", fields, 4);
}

/*
 * Looks the candidates' runs up on GitHub, page after page; false when the
 * listing failed (then nothing is concluded from it).
 */
static bool
find_runs(struct dispatcher *d, struct candidate *c, int nc)
{
	time_t since = c[0].o.dispatched_at;

	for (int i = 1; i < nc; i++)
		if (c[i].o.dispatched_at < since)
			since = c[i].o.dispatched_at;
	/* the database's and GitHub's clocks may differ a little */
	since -= ORPHAN_AFTER_S;

	for (int page = 1; page <= RECONCILE_MAX_PAGES; page++)
	{
		struct github_answer ans;
		time_t               until;
		int                  nruns = 0;
		int                  unmatched = 0;
		char                 err[200];

		if (paused(d) || !ensure_auth(d, false))
			return false;
		github_list_runs(d->gh, since, page, &ans);
		until = decide_rate_limit(&ans.a, time(NULL));
		if (until > 0)
			pause_until(d, until);
		if (ans.a.status != 200)
		{
			char what[500];

			answer_describe(&ans.a, what, sizeof what);
			log_warn("reconciliation: cannot list the workflow's runs: %s", what);
			github_answer_free(&ans);
			return false;
		}
		for (int i = 0; i < nc; i++)
		{
			int found;

			if (c[i].matched)
				continue;
			found = runs_find(ans.a.body, c[i].o.id, &c[i].run_id, c[i].run_url,
							  sizeof c[i].run_url, &nruns, err, sizeof err);
			if (found < 0)
			{
				log_warn("reconciliation: unexpected answer listing the runs: %s", err);
				github_answer_free(&ans);
				return false;
			}
			c[i].matched = found == 1;
			unmatched += !c[i].matched;
		}
		github_answer_free(&ans);
		if (unmatched == 0 || nruns < GITHUB_RUNS_PER_PAGE)
			break;
	}
	return true;
}

/*
 * Dispatched jobs without a run for more than ORPHAN_AFTER_S that no live
 * dispatcher holds: adopt the run GitHub has for each (its title holds the
 * job id), or, after RESEND_AFTER_S without one, dispatch the job again.
 */
static void
reconcile(struct dispatcher *d)
{
	struct orphan    *found = calloc(RECONCILE_BATCH, sizeof *found);
	struct candidate *c = calloc(RECONCILE_BATCH, sizeof *c);
	struct db_error   err;
	double            now = monotonic_seconds();
	int               n = 0;
	int               nc = 0;
	bool              listed;

	if (found == NULL || c == NULL)
		goto done;
	switch (db_orphans(d->db, ORPHAN_AFTER_S, found, RECONCILE_BATCH, &n, &err))
	{
		case DB_OK:
			break;
		case DB_SQL_ERROR:
			log_error("reconciliation: cannot read dispatched jobs: %s (SQLSTATE %s)", err.message,
					  err.sqlstate);
			snprintf(d->poll_error, sizeof d->poll_error,
					 "cannot read provision.provisioning_jobs: %s", err.message);
			goto done;
		case DB_DOWN:
			goto done;
	}
	for (int i = 0; i < n; i++)
	{
		bool locked;

		if (find_job(d, found[i].id) != NULL)
			continue;
		if (db_lock_job(d->db, found[i].id, &locked, &err) != DB_OK)
			goto done;
		/* locked by another session: a live dispatcher is working on it */
		if (!locked)
			continue;
		c[nc].o = found[i];
		c[nc].sent_lately = recently_sent(d, found[i].id, now);
		nc++;
	}
	if (nc == 0)
		goto done;

	listed = find_runs(d, c, nc);
	for (int i = 0; i < nc && db_is_up(d->db); i++)
	{
		if (c[i].matched)
		{
			switch (db_record_dispatch(d->db, c[i].o.id, c[i].run_id, c[i].run_url, &err))
			{
				case DB_OK:
					metrics_reconciled(true);
					log_reconciled("adopted", &c[i]);
					break;
				case DB_SQL_ERROR:
					log_warn("reconciliation: job %s: record_dispatch refused run %lld: %s",
							 c[i].o.id, c[i].run_id, err.message);
					break;
				case DB_DOWN:
					goto done;
			}
		}
		else if (listed && c[i].o.age_s >= RESEND_AFTER_S && !c[i].sent_lately &&
				 d->njobs < 2 * d->cfg->batch)
		{
			if (add_job(d, c[i].o.id, c[i].o.agent_id, true, true) != NULL)
			{
				metrics_reconciled(false);
				log_reconciled("resend", &c[i]);
				continue; /* keeps its lock while held */
			}
		}
		unlock_job(d, c[i].o.id);
	}

done:
	free(found);
	free(c);
}

/* ---- the loop ------------------------------------------------------------- */

static void
claim(struct dispatcher *d)
{
	long                room = d->cfg->batch - count_phase(d, PHASE_SEND);
	struct claimed_job *jobs;
	struct db_error     err;
	int                 n = 0;

	if (room <= 0 || d->njobs >= 2 * d->cfg->batch)
		return;
	jobs = calloc((size_t) room, sizeof *jobs);
	if (jobs == NULL)
		return;
	switch (db_claim_jobs(d->db, room, jobs, &n, &err))
	{
		case DB_OK:
			for (int i = 0; i < n; i++)
				if (add_job(d, jobs[i].id, jobs[i].agent_id, jobs[i].locked, false) == NULL)
					log_error("job %s: out of memory; left for reconciliation", jobs[i].id);
			break;
		case DB_SQL_ERROR:
			log_error("provision.claim_jobs failed: %s (SQLSTATE %s)", err.message, err.sqlstate);
			snprintf(d->poll_error, sizeof d->poll_error, "provision.claim_jobs failed: %s",
					 err.message);
			break;
		case DB_DOWN:
			break;
	}
	free(jobs);
}

static void
poll_database(struct dispatcher *d)
{
	struct db_error err;
	long            enqueued;

	d->poll_now = false;
	d->next_poll = monotonic_seconds() + d->cfg->poll_ms / 1000.0;
	d->poll_error[0] = '\0';

	switch (db_retry_failed_jobs(d->db, &enqueued, &err))
	{
		case DB_OK:
			if (enqueued > 0)
				log_info("provision.retry_failed_jobs enqueued %ld new jobs", enqueued);
			break;
		case DB_SQL_ERROR:
			log_error("provision.retry_failed_jobs failed: %s (SQLSTATE %s)", err.message,
					  err.sqlstate);
			snprintf(d->poll_error, sizeof d->poll_error, "provision.retry_failed_jobs failed: %s",
					 err.message);
			break;
		case DB_DOWN:
			return;
	}
	/* claims commit before the calls: none while no call can be made */
	if (paused(d) || !ensure_auth(d, false))
		return;
	reconcile(d);
	if (db_is_up(d->db) && !paused(d))
		claim(d);
}

static void
send_due(struct dispatcher *d, struct dispatcher_signals *sig)
{
	for (int i = 0; i < d->njobs && !sig->stop;)
	{
		struct held_job *j = &d->jobs[i];

		if (j->phase != PHASE_SEND || j->next_try > monotonic_seconds())
		{
			i++;
			continue;
		}
		if (paused(d))
			return;
		send_one(d, j);
		/* recorded right after its answer, so that a stop finds it done */
		if (j->phase != PHASE_SEND)
			flush(d, false);
		else if (j->next_try > monotonic_seconds())
			i++;
		/* else: a fallback or a renewed token sends the same job again at once */
	}
}

static void
drain_pipe(int fd)
{
	char    buf[64];
	ssize_t n;

	do
		n = read(fd, buf, sizeof buf);
	while (n > 0 || (n < 0 && errno == EINTR));
}

/* Sleeps until the next thing to do, a notification or a signal. */
static void
wait_for_work(struct dispatcher *d, struct dispatcher_signals *sig)
{
	double        now = monotonic_seconds();
	double        until = d->poll_now ? now : d->next_poll;
	bool          is_paused = paused(d);
	struct pollfd pfd[2];
	int           nfd = 0;
	long          ms;

	for (int i = 0; i < d->njobs; i++)
	{
		const struct held_job *j = &d->jobs[i];

		/* while paused, sends wait for the pause's end; records for the database */
		if ((j->phase == PHASE_SEND && is_paused) || (j->phase != PHASE_SEND && !db_is_up(d->db)))
			continue;
		if (j->next_try < until)
			until = j->next_try;
	}
	if (is_paused && pause_end(d) < until)
		until = pause_end(d);
	if (!db_is_up(d->db) && db_next_attempt(d->db) < until)
		until = db_next_attempt(d->db);
	ms = (long) ((until - now) * 1000) + 1;
	if (ms < 0)
		ms = 0;
	if (ms > WAIT_MAX_MS)
		ms = WAIT_MAX_MS;

	pfd[nfd++] = (struct pollfd){sig->wake_fd, POLLIN, 0};
	if (db_is_up(d->db))
		pfd[nfd++] = (struct pollfd){db_socket(d->db), POLLIN, 0};
	if (poll(pfd, (nfds_t) nfd, (int) ms) > 0 && (pfd[0].revents & POLLIN))
		drain_pipe(sig->wake_fd);
}

/* SIGTERM: record what was answered, within --shutdown-timeout. */
static void
drain(struct dispatcher *d)
{
	double deadline = monotonic_seconds() + d->cfg->shutdown_timeout_ms / 1000.0;
	int    unsent;
	int    unrecorded;

	d->stopping = true;
	publish_readiness(d);
	log_info("stopping: claiming nothing more; recording the answers received");
	while (d->njobs > count_phase(d, PHASE_SEND) && monotonic_seconds() < deadline)
	{
		bool   fresh;
		double wake;

		if (db_ensure(d->db, &fresh))
			flush(d, true);
		if (d->njobs == count_phase(d, PHASE_SEND))
			break;
		wake = db_is_up(d->db) ? monotonic_seconds() + 0.2 : db_next_attempt(d->db);
		if (wake > deadline)
			wake = deadline;
		if (wake > monotonic_seconds())
			poll(NULL, 0, (int) ((wake - monotonic_seconds()) * 1000) + 1);
	}
	unsent = count_phase(d, PHASE_SEND);
	unrecorded = d->njobs - unsent;
	if (unsent > 0)
		log_info("%d claimed jobs not dispatched (yet): left to reconciliation, which looks for "
				 "their runs after %d s and dispatches them again after %d s",
				 unsent, ORPHAN_AFTER_S, RESEND_AFTER_S);
	if (unrecorded > 0)
		log_warn("%d answers not recorded within the shutdown timeout: reconciliation adopts "
				 "their runs or fails them anew",
				 unrecorded);
	/* closing the session releases the advisory locks of what is left */
	while (d->njobs > 0)
	{
		d->jobs[d->njobs - 1].locked = false;
		remove_job(d, &d->jobs[d->njobs - 1]);
	}
}

void
dispatcher_run(struct dispatcher *d, struct dispatcher_signals *sig)
{
	const struct config *cfg = d->cfg;

	log_info("dispatching to %s, workflow %s at ref %s, through %s with %s; batch %ld, poll %ld "
			 "ms, give up after %ld ms",
			 cfg->repo, cfg->workflow, cfg->ref, cfg->api,
			 cfg->auth == AUTH_APP ? "a GitHub App" : "a token", cfg->batch, cfg->poll_ms,
			 cfg->give_up_ms);
	d->poll_now = true;
	while (!sig->stop)
	{
		bool fresh;

		if (sig->reload)
		{
			sig->reload = 0;
			reload_credentials(d);
		}
		if (db_ensure(d->db, &fresh) && fresh)
		{
			/* a new session holds no locks: take them again or let the job go */
			for (int i = 0; i < d->njobs; i++)
			{
				struct held_job *j = &d->jobs[i];
				struct db_error  err;

				if (db_lock_job(d->db, j->id, &j->locked, &err) != DB_OK)
					break;
				if (!j->locked && j->phase == PHASE_SEND)
				{
					log_warn("job %s was taken over by another dispatcher while the database was "
							 "away; leaving it",
							 j->id);
					remove_job(d, j);
					i--;
				}
			}
			d->poll_now = true;
		}
		if (db_is_up(d->db) && db_take_wakeup(d->db))
			d->poll_now = true;
		if (db_is_up(d->db))
			flush(d, false);
		if (db_is_up(d->db) && (d->poll_now || monotonic_seconds() >= d->next_poll))
			poll_database(d);
		send_due(d, sig);
		publish_readiness(d);
		/* a notification read along with a statement's result leaves nothing on the socket */
		if (db_is_up(d->db) && db_take_wakeup(d->db))
			d->poll_now = true;
		if (!sig->stop)
			wait_for_work(d, sig);
	}
	drain(d);
}
