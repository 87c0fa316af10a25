/*
 * rows.c
 *		Unique-key probes and row locks on the provision tables without the
 *		executor.
 *
 * Every callback first looks up its delivery and then locks its job and
 * agent rows, and a heartbeat looks up the agent's instance: each one index
 * probe. Through SPI each probe would pay the
 * executor's set-up and tear-down, several times the probe itself. These
 * helpers do what the executor does for `SELECT ... WHERE pk = $1 FOR
 * UPDATE`: an index scan under an MVCC snapshot (which also takes the
 * predicate locks SERIALIZABLE needs), then table_tuple_lock with the same
 * flags and the same handling of each outcome as ExecLockRows.
 *
 * The functions that call them run as the extension owner (SECURITY
 * DEFINER), which holds every privilege on these tables, so there are no
 * permission checks to repeat.
 */
#include "provision.h"

#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "executor/tuptable.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"

static Oid
provision_relid(const char *name)
{
	Oid relid = get_relname_relid(name, get_namespace_oid("provision", false));

	if (!OidIsValid(relid))
		elog(ERROR, "relation provision.%s does not exist", name);
	return relid;
}

/*
 * Opens provision.<table> with lockmode and the unique index
 * provision.<index> (its primary key when index is NULL), with a slot for
 * its rows and the snapshot a new statement would get (under READ
 * COMMITTED, taken now).
 */
void
row_probe_begin(RowProbe *p, const char *table, const char *index, LOCKMODE lockmode)
{
	p->rel = table_open(provision_relid(table), lockmode);
	if (index != NULL)
		p->index = index_open(provision_relid(index), AccessShareLock);
	else
	{
		/* rd_pkindex is filled in by RelationGetIndexList */
		list_free(RelationGetIndexList(p->rel));
		if (!OidIsValid(p->rel->rd_pkindex))
			elog(ERROR, "relation provision.%s has no primary key", table);
		p->index = index_open(p->rel->rd_pkindex, AccessShareLock);
	}
	p->slot = table_slot_create(p->rel, NULL);
	p->snapshot = RegisterSnapshot(GetTransactionSnapshot());
}

/* Releases what row_probe_begin took; the relation locks stay until the end of the transaction. */
void
row_probe_end(RowProbe *p)
{
	UnregisterSnapshot(p->snapshot);
	ExecDropSingleTupleTableSlot(p->slot);
	index_close(p->index, NoLock);
	table_close(p->rel, NoLock);
}

/*
 * Stores in p->slot the row whose key in the probe's index (one column,
 * compared with the btree equality function eqproc under the index's
 * collation) is key, as the probe's snapshot sees it; false when there is
 * none.
 */
bool
row_probe_fetch(RowProbe *p, RegProcedure eqproc, Datum key)
{
	ScanKeyData   skey;
	IndexScanDesc scan;
	bool          found;

	ScanKeyEntryInitialize(&skey, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   p->index->rd_indcollation[0], eqproc, key);
	scan = index_beginscan(p->rel, p->index, p->snapshot, 1, 0);
	index_rescan(scan, &skey, 1, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, p->slot);
	index_endscan(scan);
	return found;
}

/*
 * Locks the row row_probe_fetch found with mode, as SELECT ... FOR UPDATE
 * (or FOR NO KEY UPDATE) does: waits for a transaction that holds a
 * conflicting lock and, under READ COMMITTED, then locks the latest version
 * of the row, which p->slot holds on return. Under REPEATABLE READ and SERIALIZABLE a row
 * changed since the snapshot is a serialization failure (40001). False when
 * the row was deleted meanwhile.
 *
 * *contended (if not NULL) says whether another transaction was in the way:
 * the lock had to be waited for, or the row had changed since the snapshot.
 * False still allows for a transaction that only locked the row and
 * committed between the snapshot and this call.
 */
bool
row_probe_lock(RowProbe *p, LockTupleMode mode, bool *contended)
{
	Relation        rel = p->rel;
	TM_FailureData  tmfd;
	int             flags = IsolationUsesXactSnapshot() ? 0 : TUPLE_LOCK_FLAG_FIND_LAST_VERSION;
	ItemPointerData tid = p->slot->tts_tid;
	CommandId       cid = GetCurrentCommandId(true);
	bool            waited = false;
	TM_Result       result;

	/* Without waiting first, to learn whether the lock was free. */
	result =
		table_tuple_lock(rel, &tid, p->snapshot, p->slot, cid, mode, LockWaitSkip, flags, &tmfd);
	if (result == TM_WouldBlock)
	{
		waited = true;
		tid = p->slot->tts_tid;
		result = table_tuple_lock(rel, &tid, p->snapshot, p->slot, cid, mode, LockWaitBlock, flags,
								  &tmfd);
	}
	if (contended != NULL)
		*contended = waited || result != TM_Ok || tmfd.traversed;
	switch (result)
	{
		case TM_Ok:
			return true;
		case TM_SelfModified:
			/* changed by a later command of this transaction: as ExecLockRows, gone */
			return false;
		case TM_Updated:
		case TM_Deleted:
			if (IsolationUsesXactSnapshot())
				ereport(ERROR, (errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
								errmsg("could not serialize access due to concurrent update")));
			if (result == TM_Deleted)
				return false;
			elog(ERROR, "relation %s: unexpected concurrent update", RelationGetRelationName(rel));
			break;
		default:
			elog(ERROR, "relation %s: unexpected table_tuple_lock result %d",
				 RelationGetRelationName(rel), (int) result);
	}
	return false;
}

/*
 * Raises the error of a library newer than the extension's objects in this
 * database: the files of a new version are installed, but ALTER EXTENSION
 * provision UPDATE has not run here yet. Without it the first statement
 * naming a new column would fail with an error that does not say why.
 */
void
schema_outdated(const char *table, const char *column)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_COLUMN),
			 errmsg("column provision.%s.%s does not exist", table, column),
			 errdetail("The provision library is version %s; this database has an earlier version "
					   "of the extension.",
					   PROVISION_VERSION),
			 errhint("Run ALTER EXTENSION provision UPDATE.")));
}
