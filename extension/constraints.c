/*
 * constraints.c
 *		The functions behind two constraints of the install script: the CHECK
 *		constraint that ties a job's status to its timestamps, and the
 *		constraint trigger that limits agent names.
 *
 * Both are here for speed. PostgreSQL 15 parses and plans every CHECK
 * expression again for each statement that writes the table, so an
 * expression of a dozen nodes costs a callback more than a call of one C
 * function does; and a CHECK runs on every row change, where the trigger
 * runs only when a name is written.
 */
#include "provision.h"

#include "commands/trigger.h"
#include "fmgr.h"
#include "utils/fmgrprotos.h"
#include "utils/rel.h"

/*
 * The timestamp a job in each status must have, as the argument of
 * job_status_timestamp_set that carries it (0: none). The statements of
 * steps.c and instances.c set completed_at on entering running and failed_at
 * on entering failed.
 */
/* clang-format off */
static const int status_timestamp_arg[JOB_STATUS_COUNT] = {
	[JOB_RUNNING] = 1, /* completed_at */
	[JOB_FAILED] = 2,  /* failed_at */
};
/* clang-format on */

/*
 * provision.job_status_timestamp_set(status, completed_at, failed_at): whether
 * a job in status has the timestamp that status requires (a running job has
 * completed_at, a failed job failed_at). The CHECK constraint
 * provisioning_jobs_status_timestamp calls it; NULL for a NULL status, which
 * the NOT NULL constraint reports.
 */
PG_FUNCTION_INFO_V1(job_status_timestamp_set);
Datum
job_status_timestamp_set(PG_FUNCTION_ARGS)
{
	int arg;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	arg = status_timestamp_arg[job_status_from_enum(PG_GETARG_DATUM(0))];
	PG_RETURN_BOOL(arg == 0 || !PG_ARGISNULL(arg));
}

/*
 * provision.agent_name_check(): the constraint trigger agents_name_length,
 * fired after an agent is inserted or its name updated. Raises 23514 for a
 * name that is not 1 to 255 characters.
 */
PG_FUNCTION_INFO_V1(agent_name_check);
Datum
agent_name_check(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple    tuple;
	TupleDesc    desc;
	Datum        name;
	bool         isnull;
	int          chars;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_AFTER(trigdata->tg_event) || TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		elog(ERROR, "agent_name_check must fire after insert or update, for each row");

	tuple = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ? trigdata->tg_newtuple
														: trigdata->tg_trigtuple;
	desc = RelationGetDescr(trigdata->tg_relation);
	name = heap_getattr(tuple, SPI_fnumber(desc, "name"), desc, &isnull);
	if (isnull)
		return PointerGetDatum(NULL); /* the NOT NULL constraint reports it */

	chars = DatumGetInt32(DirectFunctionCall1(textlen, name));
	if (chars < 1 || chars > PROVISION_MAX_AGENT_NAME_CHARS)
		ereport(ERROR, (errcode(ERRCODE_CHECK_VIOLATION),
						errmsg("agent name must be 1 to %d characters, not %d",
							   PROVISION_MAX_AGENT_NAME_CHARS, chars),
						errtableconstraint(trigdata->tg_relation, trigdata->tg_trigger->tgname)));
	return PointerGetDatum(NULL);
}
