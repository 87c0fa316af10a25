/*
 * net.h - a listening TCP socket for a daemon's HTTP side.
 */
#ifndef PROVISION_NET_H
#define PROVISION_NET_H

#include <stddef.h>

/*
 * Resolves host (a name, an IPv4 or an IPv6 address without brackets) and
 * listens on the first address that works, IPv4 first: a name such as
 * localhost may resolve to both ::1 and 127.0.0.1, and clients dialing
 * 127.0.0.1 expect to find it.  Returns the non-blocking, close-on-exec
 * socket, or -1 with one line in err naming the failing call.
 */
int net_listen(const char *host, const char *port, int backlog, char *err, size_t errlen);

#endif
