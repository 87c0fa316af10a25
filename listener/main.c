/*
 * main.c - provision-listener: verified webhook callbacks in, one call of
 * provision.handle_callback() out.
 *
 * Parse the configuration, check it (including binding the port), open the
 * database pool, start HTTP, wait for SIGTERM or SIGINT (re-reading the
 * secret files on SIGHUP meanwhile), drain, exit.
 */
#include "config.h"
#include "db.h"
#include "environ.h"
#include "http.h"
#include "log.h"

#include <cjson/cJSON.h>
#include <libpq-fe.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXIT_CONFIG 2

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t reload_requested;

static void
on_stop_signal(int signo)
{
	(void) signo;
	stop_requested = 1;
}

static void
on_reload_signal(int signo)
{
	(void) signo;
	reload_requested = 1;
}

/*
 * Re-reads the secret files, both or neither: a file that no longer passes
 * the rules leaves every secret as it was, and the listener goes on.
 * Secrets that came from the environment cannot be read again and stay.
 */
static void
reload_secrets(const struct config *cfg, struct http_server *http)
{
	struct secrets callback;
	struct secrets stripe;
	char           err[512];
	bool           ok = true;

	memset(&callback, 0, sizeof callback);
	memset(&stripe, 0, sizeof stripe);
	if (cfg->secret_file == NULL && cfg->stripe_secret_file == NULL)
	{
		log_info("SIGHUP: the secrets came from the environment, which is not read again; "
				 "nothing reloaded");
		return;
	}
	if (cfg->secret_file != NULL)
		ok = config_read_secret_file(cfg->secret_file, SECRET_FORM_WEBHOOK, &callback, err,
									 sizeof err);
	if (ok && cfg->stripe_secret_file != NULL)
		ok = config_read_secret_file(cfg->stripe_secret_file, SECRET_FORM_EXACT, &stripe, err,
									 sizeof err);
	if (ok && !http_replace_secrets(http, cfg->secret_file ? &callback : NULL,
									cfg->stripe_secret_file ? &stripe : NULL))
	{
		snprintf(err, sizeof err, "out of memory");
		ok = false;
	}
	if (ok && cfg->secret_file != NULL)
		log_info("SIGHUP: %d callback secrets reloaded from %s", callback.count, cfg->secret_file);
	if (ok && cfg->stripe_secret_file != NULL)
		log_info("SIGHUP: %d Stripe secrets reloaded from %s", stripe.count,
				 cfg->stripe_secret_file);
	if (!ok)
		log_warn("SIGHUP: secrets not reloaded, keeping the ones in use: %s", err);
	secrets_clear(&callback);
	secrets_clear(&stripe);
}

int
main(int argc, char **argv)
{
	struct config       cfg;
	char                err[512];
	sigset_t            stop_signals;
	sigset_t            waiting_mask;
	struct sigaction    sa;
	struct db_pool     *pool;
	struct http_server *http;
	int                 listen_fd;

	switch (config_parse(&cfg, argc, argv, getenv, err, sizeof err))
	{
		case CONFIG_HELP:
			config_usage(stdout);
			config_free(&cfg);
			return EXIT_SUCCESS;
		case CONFIG_VERSION:
			printf("provision-listener %s\n", PROVISION_LISTENER_VERSION);
			config_free(&cfg);
			return EXIT_SUCCESS;
		case CONFIG_ERROR:
			fprintf(stderr, "provision-listener: %s\n", err);
			config_free(&cfg);
			return EXIT_CONFIG;
		case CONFIG_OK:
			break;
	}
	/* the secrets are in cfg now; environ is not thread-safe, and no thread exists yet */
	env_wipe("PROVISION_WEBHOOK_SECRET");
	env_wipe("PROVISION_STRIPE_WEBHOOK_SECRET");
	log_set_format(cfg.log_format);

	/*
	 * Block the stop and reload signals in every thread; the main thread
	 * takes them only inside sigsuspend(), so a handler cannot race the
	 * check of its flag.
	 */
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &stop_signals, &waiting_mask);
	sigdelset(&waiting_mask, SIGTERM);
	sigdelset(&waiting_mask, SIGINT);
	sigdelset(&waiting_mask, SIGHUP);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_reload_signal;
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);

	listen_fd = http_bind(&cfg, err, sizeof err);
	if (listen_fd < 0)
	{
		fprintf(stderr, "provision-listener: %s\n", err);
		config_free(&cfg);
		return EXIT_CONFIG;
	}

	log_info("provision-listener %s starting: libpq %d, libmicrohttpd %s, %s, cJSON %s",
			 PROVISION_LISTENER_VERSION, PQlibVersion(), MHD_get_version(),
			 OpenSSL_version(OPENSSL_VERSION), cJSON_Version());

	pool = db_pool_open(&cfg, err, sizeof err);
	if (pool == NULL)
	{
		log_error("%s", err);
		close(listen_fd);
		config_free(&cfg);
		return EXIT_FAILURE;
	}

	http = http_start(&cfg, listen_fd, pool, err, sizeof err);
	if (http == NULL)
	{
		log_error("%s", err);
		close(listen_fd);
		db_pool_close(pool);
		config_free(&cfg);
		return EXIT_FAILURE;
	}
	log_info("listening on %s port %s with %ld database connections and %ld workers",
			 cfg.listen_host, cfg.listen_port, cfg.pool, cfg.threads);
	log_info("callback signature schemes accepted: %s%s%s",
			 cfg.schemes & SCHEMES_STANDARD ? "standard" : "",
			 cfg.schemes == (SCHEMES_STANDARD | SCHEMES_GITHUB) ? "," : "",
			 cfg.schemes & SCHEMES_GITHUB ? "github" : "");

	/* from here on the HTTP side holds the only copy of the secrets */
	secrets_clear(&cfg.secrets);
	secrets_clear(&cfg.stripe_secrets);

	while (!stop_requested)
	{
		sigsuspend(&waiting_mask);
		if (reload_requested && !stop_requested)
		{
			reload_requested = 0;
			reload_secrets(&cfg, http);
		}
	}

	log_info("stopping: no new connections, finishing requests in progress");
	http_quiesce(http);
	if (!http_drain(http, cfg.shutdown_timeout_ms))
		log_warn("requests still in progress after %ldms; closing anyway", cfg.shutdown_timeout_ms);
	/*
	 * Workers finish the queue first; a request still arriving on a kept-
	 * alive connection is then answered 503 by the HTTP side, which keeps
	 * using the (stopped) pool until it is gone itself.
	 */
	db_pool_stop(pool);
	http_drain(http, 1000);
	http_stop(http);
	db_pool_close(pool);
	log_info("stopped");
	config_free(&cfg);
	return EXIT_SUCCESS;
}
