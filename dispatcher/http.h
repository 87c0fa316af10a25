/*
 * http.h - the dispatcher's optional HTTP side (--metrics-listen):
 * GET /healthz, /readyz and /metrics, served by libmicrohttpd on its own
 * thread, so probes are answered while the main loop waits on GitHub.
 */
#ifndef PROVISION_DISPATCHER_HTTP_H
#define PROVISION_DISPATCHER_HTTP_H

#include <stdbool.h>
#include <stddef.h>

/* Readiness as the main loop last saw it: true, or false with a reason. */
typedef bool (*http_ready_fn)(void *arg, char *reason, size_t len);

struct http_server;

/* Serves on the bound socket (common/net.h) until http_stop(). */
struct http_server *http_start(int listen_fd, http_ready_fn ready, void *arg, char *err,
							   size_t errlen);

void http_stop(struct http_server *server);

#endif
