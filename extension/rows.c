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

static Oid
provision_relid(const char *name)
{
	Oid relid = get_relname_relid(name, get_namespace_oid("provision", false));

	if (!OidIsValid(relid))
		elog(ERROR, "relation provision.%s does not exist", name);
	return relid;
}

/*
 * Opens provision.<name> with lockmode and, when pkey is not NULL, its
 * primary key index, which *pkey receives.
 */
Relation
provision_table_open(const char *name, LOCKMODE lockmode, Relation *pkey)
{
	Relation rel = table_open(provision_relid(name), lockmode);

	if (pkey != NULL)
	{
		/* rd_pkindex is filled in by RelationGetIndexList */
		list_free(RelationGetIndexList(rel));
		if (!OidIsValid(rel->rd_pkindex))
			elog(ERROR, "relation provision.%s has no primary key", name);
		*pkey = index_open(rel->rd_pkindex, AccessShareLock);
	}
	return rel;
}

/* Opens the index provision.<name>. */
Relation
provision_index_open(const char *name)
{
	return index_open(provision_relid(name), AccessShareLock);
}

/* Closes both; their locks are kept until the end of the transaction. */
void
provision_table_close(Relation rel, Relation index)
{
	index_close(index, NoLock);
	table_close(rel, NoLock);
}

/*
 * Stores in slot the row whose key in a unique index of one column
 * (compared with the btree equality function eqproc under the index's
 * collation) is key, as snapshot sees it; false when there is none.
 */
bool
unique_fetch(Relation rel, Relation index, RegProcedure eqproc, Datum key, Snapshot snapshot,
			 TupleTableSlot *slot)
{
	ScanKeyData   skey;
	IndexScanDesc scan;
	bool          found;

	ScanKeyEntryInitialize(&skey, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   index->rd_indcollation[0], eqproc, key);
	scan = index_beginscan(rel, index, snapshot, 1, 0);
	index_rescan(scan, &skey, 1, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	return found;
}

/*
 * Locks the row in slot with mode, as SELECT ... FOR UPDATE (or FOR NO KEY
 * UPDATE) does: waits for a transaction that holds a conflicting lock and,
 * under READ COMMITTED, then locks the latest version of the row, which
 * slot holds on return. Under REPEATABLE READ and SERIALIZABLE a row
 * changed since the snapshot is a serialization failure (40001). False when
 * the row was deleted meanwhile.
 *
 * *contended (if not NULL) says whether another transaction was in the way:
 * the lock had to be waited for, or the row had changed since the snapshot.
 * False still allows for a transaction that only locked the row and
 * committed between the snapshot and this call.
 */
bool
row_lock(Relation rel, TupleTableSlot *slot, Snapshot snapshot, LockTupleMode mode, bool *contended)
{
	TM_FailureData  tmfd;
	int             flags = IsolationUsesXactSnapshot() ? 0 : TUPLE_LOCK_FLAG_FIND_LAST_VERSION;
	ItemPointerData tid = slot->tts_tid;
	CommandId       cid = GetCurrentCommandId(true);
	TM_Result       result;

	/* Without waiting first, to learn whether the lock was free. */
	result = table_tuple_lock(rel, &tid, snapshot, slot, cid, mode, LockWaitSkip, flags, &tmfd);
	if (result == TM_WouldBlock)
	{
		tid = slot->tts_tid;
		result =
			table_tuple_lock(rel, &tid, snapshot, slot, cid, mode, LockWaitBlock, flags, &tmfd);
		tmfd.traversed = true;
	}
	if (contended != NULL)
		*contended = result != TM_Ok || tmfd.traversed;
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
