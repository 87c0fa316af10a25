/*
 * locks.c
 *		Locking one job and its agent, and the other unique-key probes of a
 *		callback (its delivery, the agent's instance, the agent's open job),
 *		without the executor.
 *
 * Every callback looks up its delivery and then locks its job and agent
 * rows, and a heartbeat looks up the agent's instance: each one index probe.
 * Through SPI each would pay the executor's set-up and tear-down, several
 * times the probe itself. So this file does what the executor does for
 * `SELECT ... WHERE key = $1 FOR UPDATE`: an index scan under an MVCC
 * snapshot (which also takes the predicate locks SERIALIZABLE needs), then
 * table_tuple_lock with the same flags and the same handling of each outcome
 * as ExecLockRows.
 *
 * Relations are found through a cache of their OIDs, filled per table on
 * first use and dropped by a relcache callback when any of them changes
 * (ALTER, DROP EXTENSION), as pg_cron caches its table's. Columns are read by
 * the attribute numbers below; filling the cache checks them against the
 * catalog, so a database whose objects predate the library (ALTER EXTENSION
 * UPDATE not run yet) gets an error naming the missing column.
 *
 * The functions that call these run as the extension owner (SECURITY
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
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

/* Attribute numbers of the columns read here, in table order. */
#define Anum_provisioning_jobs_id               1
#define Anum_provisioning_jobs_agent_id         2
#define Anum_provisioning_jobs_status           3
#define Anum_provisioning_jobs_workflow_run_id  14
#define Anum_agents_status                      3
#define Anum_agent_instances_id                 1
#define Anum_agent_instances_job_id             3
#define Anum_callback_deliveries_job_id         2
#define Anum_callback_deliveries_result         4
#define Anum_callback_deliveries_payload_sha256 5

/* A column read by attribute number, checked when its table's OIDs are cached. */
typedef struct ColumnCheck
{
	AttrNumber  attnum;
	const char *name;
} ColumnCheck;

/* What a probe reads: a table and one of its unique indexes (one uuid or text column). */
typedef enum ProbeTarget
{
	PROBE_JOB,      /* provisioning_jobs by id */
	PROBE_OPEN_JOB, /* provisioning_jobs, the agent's open job, by agent_id */
	PROBE_AGENT,    /* agents by id */
	PROBE_INSTANCE, /* agent_instances by agent_id */
	PROBE_DELIVERY, /* callback_deliveries by delivery_id */
	PROBE_TARGET_COUNT
} ProbeTarget;

/* clang-format off */
static const ColumnCheck job_columns[] = {
	{Anum_provisioning_jobs_id, "id"},
	{Anum_provisioning_jobs_agent_id, "agent_id"},
	{Anum_provisioning_jobs_status, "status"},
	{Anum_provisioning_jobs_workflow_run_id, "workflow_run_id"},
	{0, NULL},
};
static const ColumnCheck agent_columns[] = {
	{Anum_agents_status, "status"},
	{0, NULL},
};
static const ColumnCheck instance_columns[] = {
	{Anum_agent_instances_id, "id"},
	{Anum_agent_instances_job_id, "job_id"},
	{0, NULL},
};
static const ColumnCheck delivery_columns[] = {
	{Anum_callback_deliveries_job_id, "job_id"},
	{Anum_callback_deliveries_result, "result"},
	{Anum_callback_deliveries_payload_sha256, "payload_sha256"},
	{0, NULL},
};

static const struct
{
	const char        *table;
	const char        *index;
	RegProcedure       eqproc; /* btree equality of the index's column */
	const ColumnCheck *columns;
} probe_targets[PROBE_TARGET_COUNT] = {
	[PROBE_JOB] = {"provisioning_jobs", "provisioning_jobs_pkey", F_UUID_EQ, job_columns},
	[PROBE_OPEN_JOB] = {"provisioning_jobs", "provisioning_jobs_one_open_per_agent", F_UUID_EQ, job_columns},
	[PROBE_AGENT] = {"agents", "agents_pkey", F_UUID_EQ, agent_columns},
	[PROBE_INSTANCE] = {"agent_instances", "agent_instances_agent_id_key", F_UUID_EQ, instance_columns},
	[PROBE_DELIVERY] = {"callback_deliveries", "callback_deliveries_pkey", F_TEXTEQ, delivery_columns},
};
/* clang-format on */

/* The cached OIDs, InvalidOid until first use and after an invalidation. */
static struct
{
	Oid relid;
	Oid indexid;
} probe_oids[PROBE_TARGET_COUNT];

/* An open probe: the relation, its index, the row found and the snapshot it was read with. */
typedef struct RowProbe
{
	Relation        rel;
	Relation        index;
	ProbeTarget     target;
	TupleTableSlot *slot;
	Snapshot        snapshot; /* registered */
} RowProbe;

static void  invalidate_probe_oids(Datum arg, Oid relid);
static void  cache_probe_oids(ProbeTarget target);
static void  probe_begin(RowProbe *p, ProbeTarget target, LOCKMODE lockmode);
static bool  probe_fetch(RowProbe *p, Datum key);
static bool  probe_lock(RowProbe *p, LockTupleMode mode, bool *contended);
static void  probe_end(RowProbe *p);
static Datum probe_column(const RowProbe *p, AttrNumber attnum);

/* Registers the invalidation of the OID cache; once per backend, from _PG_init. */
void
locks_init(void)
{
	CacheRegisterRelcacheCallback(invalidate_probe_oids, (Datum) 0);
}

/* InvalidOid means every relation (a cache reset). */
static void
invalidate_probe_oids(Datum arg, Oid relid)
{
	for (int i = 0; i < PROBE_TARGET_COUNT; i++)
		if (relid == InvalidOid || probe_oids[i].relid == relid || probe_oids[i].indexid == relid)
		{
			memset(probe_oids, 0, sizeof(probe_oids));
			return;
		}
}

static void
cache_probe_oids(ProbeTarget target)
{
	Oid namespace = get_namespace_oid("provision", false);
	Oid relid = get_relname_relid(probe_targets[target].table, namespace);
	Oid indexid = get_relname_relid(probe_targets[target].index, namespace);

	if (!OidIsValid(relid))
		elog(ERROR, "relation provision.%s does not exist", probe_targets[target].table);
	if (!OidIsValid(indexid))
		elog(ERROR, "index provision.%s does not exist", probe_targets[target].index);
	for (const ColumnCheck *c = probe_targets[target].columns; c->name != NULL; c++)
	{
		AttrNumber attnum = get_attnum(relid, c->name);

		if (attnum == InvalidAttrNumber)
			schema_outdated(probe_targets[target].table, c->name);
		if (attnum != c->attnum)
			elog(ERROR, "column provision.%s.%s is attribute %d, not %d",
				 probe_targets[target].table, c->name, attnum, c->attnum);
	}
	probe_oids[target].relid = relid;
	probe_oids[target].indexid = indexid;
}

/*
 * Opens the target's table with lockmode and its index, with a slot for its
 * rows and the snapshot a new statement would get (under READ COMMITTED,
 * taken now).
 */
static void
probe_begin(RowProbe *p, ProbeTarget target, LOCKMODE lockmode)
{
	Oid relid;
	Oid indexid;

	if (!OidIsValid(probe_oids[target].relid))
		cache_probe_oids(target);

	/*
	 * Read both OIDs before opening anything: taking a lock accepts pending
	 * invalidation messages, and the callback may empty the cache between
	 * the two opens (after a VACUUM, ANALYZE or ALTER of any cached table).
	 */
	relid = probe_oids[target].relid;
	indexid = probe_oids[target].indexid;
	p->target = target;
	p->rel = table_open(relid, lockmode);
	p->index = index_open(indexid, AccessShareLock);
	p->slot = table_slot_create(p->rel, NULL);
	p->snapshot = RegisterSnapshot(GetTransactionSnapshot());
}

/* Releases what probe_begin took; the relation locks stay until the end of the transaction. */
static void
probe_end(RowProbe *p)
{
	UnregisterSnapshot(p->snapshot);
	ExecDropSingleTupleTableSlot(p->slot);
	index_close(p->index, NoLock);
	table_close(p->rel, NoLock);
}

/*
 * Stores in p->slot the row whose key in the probe's index (compared under
 * the index's collation) is key, as the probe's snapshot sees it; false when
 * there is none.
 */
static bool
probe_fetch(RowProbe *p, Datum key)
{
	ScanKeyData   skey;
	IndexScanDesc scan;
	bool          found;

	ScanKeyEntryInitialize(&skey, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   p->index->rd_indcollation[0], probe_targets[p->target].eqproc, key);
	scan = index_beginscan(p->rel, p->index, p->snapshot, 1, 0);
	index_rescan(scan, &skey, 1, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, p->slot);
	index_endscan(scan);
	return found;
}

/*
 * Locks the row probe_fetch found with mode, as SELECT ... FOR UPDATE (or
 * FOR NO KEY UPDATE) does: waits for a transaction that holds a conflicting
 * lock and, under READ COMMITTED, then locks the latest version of the row,
 * which p->slot holds on return. Under REPEATABLE READ and SERIALIZABLE a
 * row changed since the snapshot is a serialization failure (40001). False
 * when the row was deleted meanwhile.
 *
 * *contended (if not NULL) says whether another transaction was in the way:
 * the lock had to be waited for, or the row had changed since the snapshot.
 * False still allows for a transaction that only locked the row and
 * committed between the snapshot and this call.
 */
static bool
probe_lock(RowProbe *p, LockTupleMode mode, bool *contended)
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

/* The value of a NOT NULL column of the row a probe found. */
static Datum
probe_column(const RowProbe *p, AttrNumber attnum)
{
	bool  isnull;
	Datum d = slot_getattr(p->slot, attnum, &isnull);

	if (isnull)
		elog(ERROR, "column %d of provision.%s is null", attnum, probe_targets[p->target].table);
	return d;
}

/* A provision.job_status value, as the state machine's JobStatus. */
JobStatus
job_status_from_enum(Datum value)
{
	return job_status_from_name(DatumGetCString(DirectFunctionCall1(enum_out, value)));
}

/* A provision.agent_status value, as the state machine's AgentStatus. */
AgentStatus
agent_status_from_enum(Datum value)
{
	return agent_status_from_name(DatumGetCString(DirectFunctionCall1(enum_out, value)));
}

/*
 * Locks the job row FOR UPDATE and, for LOCK_JOB_AGENT and
 * LOCK_JOB_AGENT_ROW, its agent's row FOR NO KEY UPDATE (status changes
 * derive the agent's status from its current one), and fills *job, with
 * job->row only for the *_ROW modes (update_job_status and record_dispatch
 * return the row of a job they leave alone); false when there is no such
 * job.
 *
 * The agent is read with a snapshot taken once the job lock is granted, so
 * under READ COMMITTED it is the agent as the transaction that held the job
 * lock left it. Likewise every statement after this one sees whatever
 * committed before the lock was granted, which is what makes the delivery
 * check that follows it exact.
 */
bool
job_lock(const pg_uuid_t *job_id, JobLockMode mode, LockedJob *job)
{
	RowProbe probe;
	bool     found;
	bool     lock_agent = (mode == LOCK_JOB_AGENT || mode == LOCK_JOB_AGENT_ROW);

	probe_begin(&probe, PROBE_JOB, RowShareLock);
	found = probe_fetch(&probe, UUIDPGetDatum(job_id)) &&
			probe_lock(&probe, LockTupleExclusive, &job->contended);
	if (found)
	{
		bool  isnull;
		Datum run = slot_getattr(probe.slot, Anum_provisioning_jobs_workflow_run_id, &isnull);

		job->job_id = *DatumGetUUIDP(probe_column(&probe, Anum_provisioning_jobs_id));
		job->agent_id = *DatumGetUUIDP(probe_column(&probe, Anum_provisioning_jobs_agent_id));
		job->status = job_status_from_enum(probe_column(&probe, Anum_provisioning_jobs_status));
		job->has_run = !isnull;
		job->workflow_run_id = isnull ? 0 : DatumGetInt64(run);
		job->row = (Datum) 0;
		if (mode == LOCK_JOB_ROW || mode == LOCK_JOB_AGENT_ROW)
			job->row = SPI_datumTransfer(ExecFetchSlotHeapTupleDatum(probe.slot), false, -1);
	}
	probe_end(&probe);
	if (!found)
		return false;

	probe_begin(&probe, PROBE_AGENT, lock_agent ? RowShareLock : AccessShareLock);
	found = probe_fetch(&probe, UUIDPGetDatum(&job->agent_id)) &&
			(!lock_agent || probe_lock(&probe, LockTupleNoKeyExclusive, NULL));
	/* the foreign key, checked under the job lock, keeps the agent */
	if (!found)
		elog(ERROR, "agent %s of job %s does not exist", uuid_to_cstring(&job->agent_id),
			 uuid_to_cstring(job_id));
	job->agent_status = agent_status_from_enum(probe_column(&probe, Anum_agents_status));
	probe_end(&probe);
	return true;
}

/* job_lock, raising P0002 when there is no such job. */
void
job_lock_or_error(const pg_uuid_t *job_id, JobLockMode mode, LockedJob *job)
{
	if (!job_lock(job_id, mode, job))
		ereport(ERROR, (errcode(ERRCODE_NO_DATA_FOUND),
						errmsg("job %s does not exist", uuid_to_cstring(job_id))));
}

/*
 * The agent's instance as a new statement would see it: its id and the job
 * that created it; false when the agent has none.
 */
bool
agent_instance(const pg_uuid_t *agent_id, pg_uuid_t *instance_id, pg_uuid_t *instance_job)
{
	RowProbe probe;
	bool     found;

	probe_begin(&probe, PROBE_INSTANCE, AccessShareLock);
	found = probe_fetch(&probe, UUIDPGetDatum(agent_id));
	if (found)
	{
		*instance_id = *DatumGetUUIDP(probe_column(&probe, Anum_agent_instances_id));
		*instance_job = *DatumGetUUIDP(probe_column(&probe, Anum_agent_instances_job_id));
	}
	probe_end(&probe);
	return found;
}

/* Whether the agent has an open job, as a new statement would see it. */
bool
agent_has_open_job(const pg_uuid_t *agent_id)
{
	RowProbe probe;
	bool     found;

	probe_begin(&probe, PROBE_OPEN_JOB, AccessShareLock);
	found = probe_fetch(&probe, UUIDPGetDatum(agent_id));
	probe_end(&probe);
	return found;
}

/*
 * The recorded delivery with this id, as a new statement would see it
 * (under READ COMMITTED, a snapshot taken now, so after the job lock was
 * granted it sees a twin that committed while the caller waited); false when
 * there is none. The result is a copy in the current memory context.
 */
bool
delivery_fetch(const char *delivery_id, RecordedDelivery *out)
{
	RowProbe probe;
	bool     found;

	probe_begin(&probe, PROBE_DELIVERY, AccessShareLock);
	found = probe_fetch(&probe, CStringGetTextDatum(delivery_id));
	if (found)
	{
		bool  isnull;
		Datum d;

		d = slot_getattr(probe.slot, Anum_callback_deliveries_job_id, &isnull);
		out->has_job = !isnull;
		if (!isnull)
			out->job_id = *DatumGetUUIDP(d);
		d = slot_getattr(probe.slot, Anum_callback_deliveries_payload_sha256, &isnull);
		out->payload_sha256 = isnull ? NULL : DatumGetByteaPCopy(d);
		out->result = DatumGetJsonbPCopy(probe_column(&probe, Anum_callback_deliveries_result));
	}
	probe_end(&probe);
	return found;
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
