/*
 * pqlog.c - libpq messages in the daemons' one-line log.
 */
#include "pqlog.h"

#include "log.h"

#include <string.h>

int
pq_first_line(const char *msg)
{
	return (int) strcspn(msg, "\n");
}

void
pq_log_notice(void *arg, const PGresult *res)
{
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY);

	(void) arg;
	if (msg != NULL)
		log_warn("database %s: %.*s", severity ? severity : "notice", pq_first_line(msg), msg);
}
