/*
 * github.c - GitHub's REST API over libcurl.
 *
 * One easy handle for every call, so that the connection (and its TLS
 * session) to the API is reused.  Calls are made one at a time: GitHub asks
 * integrations to send mutating requests serially, and its secondary rate
 * limits punish concurrent ones.
 */
#include "github.h"

#include "deadline.h"
#include "jwt.h"
#include "log.h"
#include "metrics.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define API_VERSION     "2022-11-28"
#define BODY_MAX        (16L * 1024 * 1024)
#define CONNECT_TIMEOUT 10000L /* ms, or less when --request-timeout is less */

struct github
{
	const struct config *cfg;
	CURL                *curl;
	char                 user_agent[64];
	/* AUTH_APP: the cached installation token */
	char  *app_token;
	time_t app_token_expires;
};

static void
forget_app_token(struct github *gh)
{
	config_free_secret(gh->app_token);
	gh->app_token = NULL;
	gh->app_token_expires = 0;
}

void
github_answer_free(struct github_answer *ans)
{
	free(ans->body);
	memset(ans, 0, sizeof *ans);
}

struct github *
github_new(const struct config *cfg, char *err, size_t errlen)
{
	struct github *gh = calloc(1, sizeof *gh);

	if (gh == NULL)
	{
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	gh->cfg = cfg;
	gh->curl = curl_easy_init();
	if (gh->curl == NULL)
	{
		snprintf(err, errlen, "cannot start libcurl: curl_easy_init failed");
		free(gh);
		return NULL;
	}
	snprintf(gh->user_agent, sizeof gh->user_agent, "provision-dispatcher/%s",
			 PROVISION_DISPATCHER_VERSION);
	return gh;
}

void
github_free(struct github *gh)
{
	if (gh == NULL)
		return;
	forget_app_token(gh);
	curl_easy_cleanup(gh->curl);
	free(gh);
}

bool
github_uses_app(const struct github *gh)
{
	return gh->cfg->auth == AUTH_APP;
}

time_t
github_token_expires(const struct github *gh)
{
	return gh->app_token_expires;
}

static size_t
on_body(char *data, size_t size, size_t n, void *arg)
{
	struct github_answer *ans = arg;
	size_t                len = size * n;
	char                 *body;

	if (ans->body_len + len > (size_t) BODY_MAX)
	{
		ans->body_too_large = true;
		return 0; /* aborts the transfer */
	}
	body = realloc(ans->body, ans->body_len + len + 1);
	if (body == NULL)
		return 0;
	memcpy(body + ans->body_len, data, len);
	ans->body = body;
	ans->body_len += len;
	ans->body[ans->body_len] = '\0';
	return len;
}

/* Keeps a header's value if it is one of those the decisions read. */
static void
keep_header(const char *line, size_t len, const char *name, char *dst, size_t dstlen)
{
	size_t namelen = strlen(name);
	size_t vlen;

	if (len <= namelen || strncasecmp(line, name, namelen) != 0 || line[namelen] != ':')
		return;
	line += namelen + 1;
	len -= namelen + 1;
	while (len > 0 && (*line == ' ' || *line == '\t'))
		line++, len--;
	while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n' || line[len - 1] == ' '))
		len--;
	vlen = len < dstlen - 1 ? len : dstlen - 1;
	memcpy(dst, line, vlen);
	dst[vlen] = '\0';
}

static size_t
on_header(char *data, size_t size, size_t n, void *arg)
{
	struct github_answer *ans = arg;
	size_t                len = size * n;

	/* a new status line (after a redirect): only the last answer counts */
	if (len >= 5 && strncmp(data, "HTTP/", 5) == 0)
	{
		ans->retry_after[0] = '\0';
		ans->ratelimit_remaining[0] = '\0';
		ans->ratelimit_reset[0] = '\0';
		return len;
	}
	keep_header(data, len, "retry-after", ans->retry_after, sizeof ans->retry_after);
	keep_header(data, len, "x-ratelimit-remaining", ans->ratelimit_remaining,
				sizeof ans->ratelimit_remaining);
	keep_header(data, len, "x-ratelimit-reset", ans->ratelimit_reset, sizeof ans->ratelimit_reset);
	return len;
}

/* Cleanses every header (one holds the credential) before freeing the list. */
static void
free_headers(struct curl_slist *headers)
{
	for (struct curl_slist *h = headers; h != NULL; h = h->next)
		OPENSSL_cleanse(h->data, strlen(h->data));
	curl_slist_free_all(headers);
}

/*
 * One call: method POST with body (JSON), or GET when body is NULL.
 * bearer is the credential for the Authorization header.
 */
static void
perform(struct github *gh, enum api_endpoint ep, const char *url, const char *body,
		const char *bearer, struct github_answer *ans)
{
	const struct config *cfg = gh->cfg;
	CURL                *c = gh->curl;
	struct curl_slist   *headers = NULL;
	char                 errbuf[CURL_ERROR_SIZE];
	char                *auth;
	size_t               authlen = strlen(bearer) + 32;
	long                 connect_ms;
	CURLcode             rc;
	double               start;

	memset(ans, 0, sizeof *ans);
	errbuf[0] = '\0';
	auth = malloc(authlen);
	if (auth == NULL)
	{
		snprintf(ans->transport_error, sizeof ans->transport_error, "out of memory");
		ans->a.transport_error = ans->transport_error;
		ans->a.body = "";
		return;
	}
	snprintf(auth, authlen, "Authorization: Bearer %s", bearer);
	headers = curl_slist_append(headers, "Accept: application/vnd.github+json");
	headers = curl_slist_append(headers, "X-GitHub-Api-Version: " API_VERSION);
	headers = curl_slist_append(headers, auth);
	if (body != NULL)
		headers = curl_slist_append(headers, "Content-Type: application/json");
	OPENSSL_cleanse(auth, authlen);
	free(auth);

	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(c, CURLOPT_USERAGENT, gh->user_agent);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	/* a redirect may not downgrade https, nor leave for another scheme */
	curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR,
					 strncmp(cfg->api, "https:", 6) == 0 ? "https" : "http,https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(c, CURLOPT_MAXREDIRS, 3L);
	curl_easy_setopt(c, CURLOPT_POSTREDIR, (long) CURL_REDIR_POST_ALL);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, cfg->request_timeout_ms);
	connect_ms =
		cfg->request_timeout_ms < CONNECT_TIMEOUT ? cfg->request_timeout_ms : CONNECT_TIMEOUT;
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
	curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, ans);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, ans);
	if (cfg->ca_file != NULL)
	{
		curl_easy_setopt(c, CURLOPT_CAINFO, cfg->ca_file);
		curl_easy_setopt(c, CURLOPT_CAPATH, NULL);
	}
	if (body != NULL)
	{
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long) strlen(body));
	}
	else
		curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);

	start = monotonic_seconds();
	rc = curl_easy_perform(c);
	ans->seconds = monotonic_seconds() - start;
	/* the handle keeps a pointer to the list: unhook it before it goes */
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
	free_headers(headers);

	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &ans->a.status);
	else
	{
		ans->a.status = 0;
		if (ans->body_too_large)
			snprintf(ans->transport_error, sizeof ans->transport_error,
					 "the answer is larger than %ld bytes", BODY_MAX);
		else
			snprintf(ans->transport_error, sizeof ans->transport_error, "%s",
					 errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc));
		ans->a.transport_error = ans->transport_error;
	}
	ans->a.body = ans->body != NULL ? ans->body : "";
	ans->a.retry_after = ans->retry_after[0] != '\0' ? ans->retry_after : NULL;
	ans->a.ratelimit_remaining =
		ans->ratelimit_remaining[0] != '\0' ? ans->ratelimit_remaining : NULL;
	ans->a.ratelimit_reset = ans->ratelimit_reset[0] != '\0' ? ans->ratelimit_reset : NULL;
	metrics_api_call(ep, ans->a.status, ans->seconds);
}

/* Exchanges a fresh JWT for an installation token. */
static void
exchange_token(struct github *gh, time_t now, struct token_decision *d)
{
	const struct config *cfg = gh->cfg;
	struct github_answer ans;
	char                 claims[256];
	char                 url[1200];
	char                *jwt;

	memset(d, 0, sizeof *d);
	if (!jwt_claims(cfg->app_id, now, claims, sizeof claims))
	{
		d->action = TOKEN_REFUSED;
		snprintf(d->error, sizeof d->error, "the App id is too long for a JWT");
		return;
	}
	jwt = jwt_sign(cfg->app_key, claims, d->error, sizeof d->error);
	if (jwt == NULL)
	{
		d->action = TOKEN_REFUSED;
		return;
	}
	snprintf(url, sizeof url, "%s/app/installations/%s/access_tokens", cfg->api,
			 cfg->installation_id);
	perform(gh, API_TOKEN, url, "{}", jwt, &ans);
	config_free_secret(jwt);
	decide_token(&ans.a, now, d);
	if (ans.body != NULL)
		OPENSSL_cleanse(ans.body, ans.body_len);
	github_answer_free(&ans);
}

void
github_authenticate(struct github *gh, time_t now, bool force, struct token_decision *d)
{
	memset(d, 0, sizeof *d);
	d->action = TOKEN_OK;
	if (gh->cfg->auth != AUTH_APP)
		return;
	if (!force && gh->app_token != NULL && !token_needs_renewal(gh->app_token_expires, now))
	{
		d->expires_at = gh->app_token_expires;
		return;
	}
	exchange_token(gh, now, d);
	if (d->action != TOKEN_OK)
		return;
	forget_app_token(gh);
	gh->app_token = d->token;
	gh->app_token_expires = d->expires_at;
	d->token = NULL;
	metrics_token_renewal();
	if (token_needs_renewal(gh->app_token_expires, now))
		log_warn("the installation token GitHub issued expires in %lld s, sooner than the %d s "
				 "it is renewed ahead; renewing it for every call",
				 (long long) (gh->app_token_expires - now), TOKEN_RENEW_BEFORE_S);
}

/* The credential for API calls: the token, or the App's installation token. */
static const char *
bearer(const struct github *gh)
{
	if (gh->cfg->auth == AUTH_APP)
		return gh->app_token != NULL ? gh->app_token : "";
	return gh->cfg->token;
}

void
github_dispatch(struct github *gh, const char *job_id, const char *agent_id, bool run_details,
				struct github_answer *ans)
{
	const struct config *cfg = gh->cfg;
	char                 url[1400];
	cJSON               *body = cJSON_CreateObject();
	cJSON               *inputs = cJSON_AddObjectToObject(body, "inputs");
	char                *text = NULL;

	cJSON_AddStringToObject(body, "ref", cfg->ref);
	cJSON_AddStringToObject(inputs, "job_id", job_id);
	cJSON_AddStringToObject(inputs, "agent_id", agent_id);
	if (run_details)
		cJSON_AddTrueToObject(body, "return_run_details");
	text = cJSON_PrintUnformatted(body);
	cJSON_Delete(body);
	if (text == NULL)
	{
		memset(ans, 0, sizeof *ans);
		snprintf(ans->transport_error, sizeof ans->transport_error, "out of memory");
		ans->a.transport_error = ans->transport_error;
		ans->a.body = "";
		return;
	}
	snprintf(url, sizeof url, "%s/repos/%s/actions/workflows/%s/dispatches", cfg->api, cfg->repo,
			 cfg->workflow);
	perform(gh, API_DISPATCH, url, text, bearer(gh), ans);
	cJSON_free(text);
}

void
github_list_runs(struct github *gh, time_t since, int page, struct github_answer *ans)
{
	const struct config *cfg = gh->cfg;
	char                 url[1600];
	char                 when[32];

	format_utc_timestamp(since, when, sizeof when);
	/* created=>=WHEN in GitHub's search syntax, escaped */
	snprintf(url, sizeof url,
			 "%s/repos/%s/actions/workflows/%s/runs?event=workflow_dispatch&created=%%3E%%3D%s"
			 "&per_page=%d&page=%d",
			 cfg->api, cfg->repo, cfg->workflow, when, GITHUB_RUNS_PER_PAGE, page);
	perform(gh, API_RUNS, url, NULL, bearer(gh), ans);
}
