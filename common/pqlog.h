/*
 * pqlog.h - libpq messages in the daemons' one-line log.
 */
#ifndef PROVISION_PQLOG_H
#define PROVISION_PQLOG_H

#include <libpq-fe.h>

/* Length of the first line of a libpq message, for "%.*s". */
int pq_first_line(const char *msg);

/*
 * A notice receiver (PQsetNoticeReceiver): server notices and asynchronous
 * errors go to the log as warnings, one line each.
 */
void pq_log_notice(void *arg, const PGresult *res);

#endif
