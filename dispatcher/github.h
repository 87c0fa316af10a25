/*
 * github.h - the three GitHub API calls the dispatcher makes, over libcurl,
 * and the credentials they carry (a token, or a GitHub App's cached
 * installation token).
 *
 * Each call fills a github_answer: the neutral api_answer that answer.c
 * decides on, plus the storage behind it.  Nothing here decides anything.
 */
#ifndef PROVISION_GITHUB_H
#define PROVISION_GITHUB_H

#include "answer.h"
#include "config.h"

#include <stdbool.h>
#include <time.h>

struct github;

struct github_answer
{
	struct api_answer a;
	double            seconds; /* how long the call took */
	char             *body;
	size_t            body_len;
	bool              body_too_large;
	char              retry_after[32];
	char              ratelimit_remaining[32];
	char              ratelimit_reset[32];
	char              transport_error[320];
};

void github_answer_free(struct github_answer *ans);

/* Reads cfg (also later: a reloaded token or key is used from then on). */
struct github *github_new(const struct config *cfg, char *err, size_t errlen);
void           github_free(struct github *gh);

/* True with GitHub App authentication. */
bool github_uses_app(const struct github *gh);

/*
 * Makes sure a usable credential is at hand: with an App, an installation
 * token valid for more than five more minutes, exchanging a fresh JWT for
 * one when needed (force: even if the cached one looks valid, after a
 * 401).  With a token, always TOKEN_OK.  On anything else d says why
 * (d->token is never set: the token stays inside).
 */
void github_authenticate(struct github *gh, time_t now, bool force, struct token_decision *d);

/* When the App's installation token expires (0: none held). */
time_t github_token_expires(const struct github *gh);

/*
 * POST {api}/repos/{repo}/actions/workflows/{workflow}/dispatches with the
 * job's inputs, and "return_run_details": true when run_details.
 */
void github_dispatch(struct github *gh, const char *job_id, const char *agent_id, bool run_details,
					 struct github_answer *ans);

/*
 * GET {api}/repos/{repo}/actions/workflows/{workflow}/runs for
 * workflow_dispatch runs created at or after since, 100 a page.
 */
void github_list_runs(struct github *gh, time_t since, int page, struct github_answer *ans);

/* Runs per page of github_list_runs. */
#define GITHUB_RUNS_PER_PAGE 100

#endif
