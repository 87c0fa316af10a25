/*
 * net.c - listening sockets.
 */
#include "net.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int
listen_on(const struct addrinfo *ai, int backlog, const char **call)
{
	int one = 1;
	int fd;
	int saved;

	*call = "socket";
	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (ai->ai_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	*call = "bind";
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0)
	{
		*call = "listen";
		if (listen(fd, backlog) == 0)
			return fd;
	}
	saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

int
net_listen(const char *host, const char *port, int backlog, char *err, size_t errlen)
{
	struct addrinfo  hints;
	struct addrinfo *res;
	int              rc;
	int              fd = -1;
	int              saved = 0;
	const char      *call = "bind";

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0)
	{
		snprintf(err, errlen, "cannot resolve listen address %s: getaddrinfo: %s", host,
				 gai_strerror(rc));
		return -1;
	}
	for (int pass = 0; pass < 2 && fd < 0; pass++)
		for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next)
		{
			if ((ai->ai_family == AF_INET) != (pass == 0))
				continue;
			fd = listen_on(ai, backlog, &call);
			if (fd < 0)
				saved = errno;
		}
	freeaddrinfo(res);
	if (fd < 0)
		snprintf(err, errlen, "cannot listen on %s port %s: %s: %s", host, port, call,
				 strerror(saved));
	return fd;
}
