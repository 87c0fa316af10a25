/*
 * main.c - provision-dispatcher: pending provisioning jobs in, one GitHub
 * Actions workflow run per job out.
 *
 * Parse the configuration, check it (credentials and the metrics port
 * included), start the metrics server, run the loop until SIGTERM or
 * SIGINT, drain, exit.
 */
#define _GNU_SOURCE /* pipe2 */
#include "config.h"
#include "dispatch.h"
#include "environ.h"
#include "http.h"
#include "log.h"
#include "net.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXIT_CONFIG 2

static struct dispatcher_signals signals = {0, 0, -1};
static int                       wake_write_fd = -1;

static void
on_signal(int signo)
{
	int saved = errno;

	if (signo == SIGHUP)
		signals.reload = 1;
	else
		signals.stop = 1;
	/* wakes the loop out of poll(); a full pipe already will */
	if (write(wake_write_fd, "x", 1) < 0)
		(void) 0;
	errno = saved;
}

static bool
install_signals(char *err, size_t errlen)
{
	struct sigaction sa;
	int              fds[2];

	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0)
	{
		snprintf(err, errlen, "cannot create the signal pipe: pipe2: %s", strerror(errno));
		return false;
	}
	signals.wake_fd = fds[0];
	wake_write_fd = fds[1];
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	return true;
}

int
main(int argc, char **argv)
{
	struct config           cfg;
	char                    err[1024];
	int                     metrics_fd = -1;
	struct http_server     *http = NULL;
	struct dispatcher      *d;
	curl_version_info_data *curl_info;

	switch (config_parse(&cfg, argc, argv, getenv, err, sizeof err))
	{
		case CONFIG_HELP:
			config_usage(stdout);
			config_free(&cfg);
			return EXIT_SUCCESS;
		case CONFIG_VERSION:
			printf("provision-dispatcher %s\n", PROVISION_DISPATCHER_VERSION);
			config_free(&cfg);
			return EXIT_SUCCESS;
		case CONFIG_ERROR:
			fprintf(stderr, "provision-dispatcher: %s\n", err);
			config_free(&cfg);
			return EXIT_CONFIG;
		case CONFIG_OK:
			break;
	}
	/* the credentials are in cfg now: gone from /proc/PID/environ and from children */
	env_wipe("PROVISION_GITHUB_TOKEN");
	env_wipe("PROVISION_GITHUB_APP_KEY");
	log_set_format(cfg.log_format);

	if (cfg.metrics)
	{
		metrics_fd = net_listen(cfg.metrics_host, cfg.metrics_port, 64, err, sizeof err);
		if (metrics_fd < 0)
		{
			fprintf(stderr, "provision-dispatcher: %s\n", err);
			config_free(&cfg);
			return EXIT_CONFIG;
		}
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !install_signals(err, sizeof err))
	{
		fprintf(stderr, "provision-dispatcher: %s\n",
				signals.wake_fd < 0 ? err : "cannot initialize libcurl");
		config_free(&cfg);
		return EXIT_FAILURE;
	}

	curl_info = curl_version_info(CURLVERSION_NOW);
	log_info("provision-dispatcher %s starting: libpq %d, libcurl %s (%s), libmicrohttpd %s, %s, "
			 "cJSON %s",
			 PROVISION_DISPATCHER_VERSION, PQlibVersion(), curl_info->version,
			 curl_info->ssl_version ? curl_info->ssl_version : "no TLS", MHD_get_version(),
			 OpenSSL_version(OPENSSL_VERSION), cJSON_Version());
	if (strncmp(cfg.api, "http://", 7) == 0)
		log_warn("--api %s is plain http: the credentials travel unencrypted", cfg.api);

	d = dispatcher_new(&cfg, err, sizeof err);
	if (d == NULL)
	{
		log_error("%s", err);
		config_free(&cfg);
		return EXIT_FAILURE;
	}
	if (metrics_fd >= 0)
	{
		http = http_start(metrics_fd, dispatcher_ready, d, err, sizeof err);
		if (http == NULL)
		{
			log_error("%s", err);
			close(metrics_fd);
			dispatcher_free(d);
			config_free(&cfg);
			return EXIT_FAILURE;
		}
		log_info("serving /healthz, /readyz and /metrics on %s port %s", cfg.metrics_host,
				 cfg.metrics_port);
	}

	dispatcher_run(d, &signals);

	http_stop(http);
	dispatcher_free(d);
	curl_global_cleanup();
	log_info("stopped");
	config_free(&cfg);
	return EXIT_SUCCESS;
}
