/*
 * history.c
 *		Retention of the append-only history: prune_history.
 */
#include "provision.h"

#include "catalog/pg_type.h"
#include "fmgr.h"

static SPIPlanPtr plan_prune;

/*
 * provision.prune_history(older_than): deletes callback deliveries and events
 * older than older_than, or provision.history_retention when NULL, and
 * returns how many rows it deleted. A pruned delivery id is no longer
 * deduplicated.
 */
PG_FUNCTION_INFO_V1(prune_history);
Datum
prune_history(PG_FUNCTION_ARGS)
{
	Oid   argtypes[1] = {TIMESTAMPTZOID};
	Datum cutoff;
	bool  isnull;
	int64 deleted;
	int   rc;

	cutoff = interval_cutoff(PG_ARGISNULL(0) ? NULL : PG_GETARG_INTERVAL_P(0),
							 provision_history_retention, "older_than");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_plan(spi_plan(&plan_prune,
								   "WITH d AS (DELETE FROM provision.callback_deliveries "
								   "WHERE received_at OPERATOR(pg_catalog.<) $1 RETURNING 1), "
								   "e AS (DELETE FROM provision.events "
								   "WHERE at OPERATOR(pg_catalog.<) $1 RETURNING 1) "
								   "SELECT (SELECT pg_catalog.count(*) FROM d) "
								   "OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM e)",
								   1, argtypes),
						  (Datum[]){cutoff}, NULL, false, 0);
	spi_check(rc, SPI_OK_SELECT, "pruning history");
	deleted =
		DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	PG_RETURN_INT64(deleted);
}
