/*
 * http.h - the HTTP side: the listening socket, libmicrohttpd, routing and
 * the checks every callback passes before it reaches the database.
 */
#ifndef PROVISION_HTTP_H
#define PROVISION_HTTP_H

#include "config.h"
#include "db.h"

#include <stdbool.h>

struct http_server;

/*
 * Listens on cfg's address (net_listen) with a backlog of at least
 * SOMAXCONN.  Returns the listening socket, or -1 with one line in err.
 */
int http_bind(const struct config *cfg, char *err, size_t errlen);

/*
 * Serves on the bound socket until http_stop(), verifying with a copy of
 * cfg's secrets (the caller may wipe its own).
 */
struct http_server *http_start(const struct config *cfg, int listen_fd, struct db_pool *pool,
							   char *err, size_t errlen);

/*
 * Replaces the callback and Stripe secrets (NULL: keep that set) for every
 * request verified from now on; a request verifying meanwhile finishes with
 * the old set, which is wiped once the last one is done.  Called from the
 * main thread on SIGHUP; false when out of memory (nothing changed).
 */
bool http_replace_secrets(struct http_server *server, const struct secrets *callback,
						  const struct secrets *stripe);

/* Stops accepting connections; answers from now on close their connection. */
void http_quiesce(struct http_server *server);

/* Waits until no request is in progress; false when timeout_ms ran out. */
bool http_drain(struct http_server *server, long timeout_ms);

/* Closes every connection and frees the server. */
void http_stop(struct http_server *server);

#endif
