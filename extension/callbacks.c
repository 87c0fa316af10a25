/*
 * callbacks.c
 *		handle_callback: the one entry point of the webhook listener.
 *
 * The payload is parsed here, in C, and routed to the same locked steps the
 * other functions use. Exactly-once per delivery id: a known delivery
 * returns its recorded result, looked up first without any lock (the common
 * redelivery), and again once the job row is locked if another transaction
 * was in the way (with a new snapshot, so under READ COMMITTED it sees a twin
 * that committed while this call waited for the lock). Otherwise the
 * statement that applies the
 * effect also records the delivery, with ON CONFLICT DO NOTHING; if that
 * records nothing, a concurrent transaction got there first with the same id
 * (for another job, or under REPEATABLE READ), and 40001 rolls this one back.
 *
 * A delivery id is bound to what it delivered: the job and the SHA-256 of
 * the payload's jsonb text are recorded with it, and both looks compare
 * them. A known id with another job or another payload is not a redelivery
 * but a reuse (a forged id, or a sender bug), refused with 23505 before it
 * can pass for a duplicate and swallow a callback that was never applied.
 */
#include "provision.h"

#include <sys/socket.h>

#include "catalog/pg_type.h"
#include "common/int.h"
#if PG_VERSION_NUM >= 140000
#include "common/cryptohash.h"
#endif
#include "executor/tuptable.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/inet.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"

/* The statuses a callback may carry. */
typedef enum CallbackStatus
{
	CALLBACK_PROVISIONING,
	CALLBACK_RUNNING,
	CALLBACK_FAILED,
	CALLBACK_HEARTBEAT
} CallbackStatus;

typedef struct Callback
{
	pg_uuid_t        job_id;
	CallbackStatus   status;
	bool             has_metadata;
	InstanceMetadata metadata;
	char            *error;
	bool             has_run; /* run_id given (run_attempt alone is not a run) */
	WorkflowRun      run;
} Callback;

static const struct
{
	const char    *name;
	CallbackStatus status;
	JobStatus      job_status;
} callback_statuses[] = {
	{"provisioning", CALLBACK_PROVISIONING, JOB_PROVISIONING},
	{"running", CALLBACK_RUNNING, JOB_RUNNING},
	{"failed", CALLBACK_FAILED, JOB_FAILED},
	{"heartbeat", CALLBACK_HEARTBEAT, JOB_STATUS_COUNT},
};

static void           parse_callback(Jsonb *payload, Callback *cb);
static JsonbValue    *required_field(Jsonb *payload, const char *key);
static CallbackStatus status_field(const JsonbValue *v);
static bool           metadata_fields(Jsonb *payload, InstanceMetadata *meta);
static char          *server_id_field(const JsonbValue *v);
static char          *string_field(const JsonbValue *v, const char *key);
static Datum          inet_field(const JsonbValue *v, const char *key);
static bool           run_number_field(Jsonb *payload, const char *key, int64 *value);
static void           check_delivery_id(const char *delivery_id);
static void           payload_sha256(Jsonb *payload, uint8 *digest);
static Jsonb         *find_delivery(const Delivery *delivery, const pg_uuid_t *job_id);

/*
 * provision.handle_callback(payload, delivery_id): applies one callback of the
 * provisioning workflow and returns the result object (job_id, agent_id,
 * action, applied, duplicate, job_status, agent_status, instance_id). The same
 * delivery id is applied at most once; a redelivery returns the recorded
 * result with "duplicate": true, and the same id with another job or
 * payload raises 23505. A callback carrying run_id is refused (55000) when
 * another workflow run owns the job, and records its run as the owner when
 * the job has none.
 */
PG_FUNCTION_INFO_V1(handle_callback);
Datum
handle_callback(PG_FUNCTION_ARGS)
{
	Callback   cb;
	Jsonb     *payload;
	Delivery   delivery_data;
	Delivery  *delivery = NULL;
	LockedJob  job;
	StepResult step;
	Jsonb     *recorded;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("callback payload must not be null")));
	payload = PG_GETARG_JSONB_P(0);
	parse_callback(payload, &cb);
	if (!PG_ARGISNULL(1))
	{
		delivery = &delivery_data;
		delivery->id = text_to_cstring(PG_GETARG_TEXT_PP(1));
		check_delivery_id(delivery->id);
		payload_sha256(payload, delivery->payload_sha256);
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/*
	 * A redelivery of a recorded callback is answered before the job is
	 * locked, so it stays a read-only transaction that waits for nobody.
	 */
	if (delivery != NULL && (recorded = find_delivery(delivery, &cb.job_id)) != NULL)
	{
		SPI_finish();
		PG_RETURN_JSONB_P(recorded);
	}

	job_lock_or_error(&cb.job_id, cb.status == CALLBACK_HEARTBEAT ? LOCK_JOB : LOCK_JOB_AGENT,
					  &job);

	/*
	 * Again under the lock if a twin may have committed while this call
	 * waited for it. A twin that committed between the first look and the
	 * lock without changing the job row is caught when the delivery is
	 * recorded (40001, and the retry finds it).
	 */
	if (delivery != NULL && job.contended &&
		(recorded = find_delivery(delivery, &cb.job_id)) != NULL)
	{
		SPI_finish();
		PG_RETURN_JSONB_P(recorded);
	}

	/* Another run's callback changes nothing, whatever it says. */
	if (cb.has_run)
		run_check(&job, cb.run.run_id);

	if (cb.status == CALLBACK_HEARTBEAT)
	{
		job_check_heartbeat(&job);
		if (cb.has_run && !job.has_run)
			run_record(&job, &cb.run, delivery ? delivery->id : NULL);
		job_heartbeat(&job, delivery, &step);
	}
	else
	{
		JobStatus        to = callback_statuses[cb.status].job_status;
		CallbackAction   action = cb.status == CALLBACK_FAILED ? ACTION_FAILED
								  : cb.has_metadata            ? ACTION_COMPLETED
															   : ACTION_STATUS;
		TransitionAction decision = job_decide(&job, to, cb.has_metadata);

		/* The first accepted callback of a run makes it the job's owner. */
		if (cb.has_run && !job.has_run)
			run_record(&job, &cb.run, delivery ? delivery->id : NULL);
		if (decision == TRANSITION_SAME || decision == TRANSITION_STALE)
			job_noop(&job, action, delivery, &step);
		else
			job_apply(&job,
					  &(JobStep){.to = to,
								 .action = decision,
								 .event = job_event_kind(to),
								 .error = cb.error,
								 .meta = cb.has_metadata ? &cb.metadata : NULL,
								 .result_action = action,
								 .delivery = delivery},
					  &step);
	}

	SPI_finish();
	PG_RETURN_JSONB_P(step.result);
}

/*
 * Validates the payload and fills *cb. Unknown keys are ignored and a JSON
 * null counts as absent. Errors name the field: 22023 for a missing or
 * mistyped field, 22P02 for a malformed uuid or IP address.
 */
static void
parse_callback(Jsonb *payload, Callback *cb)
{
	JsonbValue *v;

	if (!JB_ROOT_IS_OBJECT(payload))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("callback payload must be a JSON object"),
				 errdetail("Got a JSON %s.", JB_ROOT_IS_SCALAR(payload) ? "scalar" : "array")));

	if (!uuid_from_cstring(string_field(required_field(payload, "job_id"), "job_id"), &cb->job_id))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid \"job_id\" in callback payload"), errdetail("Expected a uuid.")));
	cb->status = status_field(required_field(payload, "status"));

	cb->error = NULL;
	cb->run.run_url = NULL;
	cb->has_run = run_number_field(payload, "run_id", &cb->run.run_id);
	if (!run_number_field(payload, "run_attempt", &cb->run.run_attempt))
		cb->run.run_attempt = 0;

	if (cb->status == CALLBACK_FAILED && (v = json_object_get(&payload->root, "error")) != NULL)
	{
		cb->error = string_field(v, "error");
		check_error_text(cb->error, "\"error\" in callback payload");
	}

	cb->has_metadata = cb->status == CALLBACK_RUNNING && metadata_fields(payload, &cb->metadata);
}

/* The value of a key the payload must have; 22023 when absent or JSON null. */
static JsonbValue *
required_field(Jsonb *payload, const char *key)
{
	JsonbValue *v = json_object_get(&payload->root, key);

	if (v == NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("missing \"%s\" in callback payload", key)));
	return v;
}

/* The "status" field; 22023 unless it names a status a callback may carry. */
static CallbackStatus
status_field(const JsonbValue *v)
{
	char *text = string_field(v, "status");

	for (int i = 0; i < lengthof(callback_statuses); i++)
		if (strcmp(text, callback_statuses[i].name) == 0)
			return callback_statuses[i].status;
	ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("invalid \"status\" in callback payload"),
					errdetail("Expected one of provisioning, running, failed, heartbeat.")));
	pg_unreachable();
}

/*
 * The VM metadata of a running callback: all three fields or none (false);
 * 22023 for some but not all.
 */
static bool
metadata_fields(Jsonb *payload, InstanceMetadata *meta)
{
	static const char *const keys[] = {"server_id", "server_ip", "tailscale_ip"};
	JsonbValue              *fields[lengthof(keys)];
	int                      present = 0;

	for (int i = 0; i < lengthof(keys); i++)
		if ((fields[i] = json_object_get(&payload->root, keys[i])) != NULL)
			present++;
	if (present == 0)
		return false;
	for (int i = 0; i < lengthof(keys); i++)
		if (fields[i] == NULL)
			ereport(
				ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("missing \"%s\" in callback payload", keys[i]),
				 errdetail(
					 "A running callback carries all of server_id, server_ip and tailscale_ip, or none of them.")));

	meta->server_id = server_id_field(fields[0]);
	meta->server_ip = inet_field(fields[1], "server_ip");
	meta->tailscale_ip = inet_field(fields[2], "tailscale_ip");
	return true;
}

/* Hetzner sends server ids as numbers; they are stored as their text. */
static char *
server_id_field(const JsonbValue *v)
{
	char *server_id;

	if (v->type == jbvNumeric)
		server_id =
			DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	else if (v->type == jbvString)
		server_id = string_field(v, "server_id");
	else
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid \"server_id\" in callback payload"),
						errdetail("Expected a JSON string or number, got a JSON %s.",
								  json_value_type(v))));
	check_server_id(server_id, " in callback payload");
	return server_id;
}

/* The field as a C string; 22023 unless it is a JSON string. */
static char *
string_field(const JsonbValue *v, const char *key)
{
	if (v->type != jbvString)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid \"%s\" in callback payload", key),
						errdetail("Expected a JSON string, got a JSON %s.", json_value_type(v))));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/*
 * The field as an inet Datum, parsed the way inet_in does, but with an error
 * (22P02) that names the field. Only a host address is accepted: a VM has an
 * address, and a network such as 203.0.113.9/24 is not one.
 */
static Datum
inet_field(const JsonbValue *v, const char *key)
{
	char *text = string_field(v, key);
	inet *addr = palloc0(sizeof(inet));
	int   bits;

	ip_family(addr) = strchr(text, ':') != NULL ? PGSQL_AF_INET6 : PGSQL_AF_INET;
	bits = pg_inet_net_pton(ip_family(addr), text, ip_addr(addr), -1);
	if (bits != (ip_family(addr) == PGSQL_AF_INET ? 32 : 128))
		ereport(ERROR, (errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
						errmsg("invalid \"%s\" in callback payload", key),
						errdetail("Expected an IP address.")));
	ip_bits(addr) = bits;
	SET_INET_VARSIZE(addr);
	return InetPGetDatum(addr);
}

/*
 * A run_id or run_attempt field (GitHub's github.run_id and
 * github.run_attempt): a JSON number or a string of digits, positive, that
 * fits in 64 bits. False when absent; 22023 naming the field otherwise.
 */
static bool
run_number_field(Jsonb *payload, const char *key, int64 *value)
{
	JsonbValue *v = json_object_get(&payload->root, key);
	const char *digits;
	int64       n = 0;

	if (v == NULL)
		return false;
	if (v->type == jbvNumeric)
		digits = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	else if (v->type == jbvString)
		digits = pnstrdup(v->val.string.val, v->val.string.len);
	else
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid \"%s\" in callback payload", key),
						errdetail("Expected a JSON number or a string of digits, got a JSON %s.",
								  json_value_type(v))));

	for (const char *c = digits;; c++)
	{
		if (*c == '\0' && c != digits)
			break;
		if (*c < '0' || *c > '9' || pg_mul_s64_overflow(n, 10, &n) ||
			pg_add_s64_overflow(n, *c - '0', &n))
		{
			n = 0;
			break;
		}
	}
	if (n < 1)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid \"%s\" in callback payload", key),
						errdetail("Expected a positive integer of at most 64 bits.")));
	*value = n;
	return true;
}

static void
check_delivery_id(const char *delivery_id)
{
	if (delivery_id[0] == '\0')
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("delivery_id must not be empty")));
	if (strlen(delivery_id) > PROVISION_MAX_DELIVERY_ID_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("delivery_id is longer than %d bytes", PROVISION_MAX_DELIVERY_ID_BYTES)));
}

/*
 * The SHA-256 of the payload's text as jsonb_out writes it: keys sorted and
 * unique, no insignificant whitespace, so that the same callback re-sent
 * with other formatting has the same digest.
 */
static void
payload_sha256(Jsonb *payload, uint8 *digest)
{
	char  *text = DatumGetCString(DirectFunctionCall1(jsonb_out, JsonbPGetDatum(payload)));
	size_t len = strlen(text);

#if PG_VERSION_NUM >= 140000
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);

	if (pg_cryptohash_init(ctx) < 0 || pg_cryptohash_update(ctx, (const uint8 *) text, len) < 0 ||
		pg_cryptohash_final(ctx, digest, PG_SHA256_DIGEST_LENGTH) < 0)
#if PG_VERSION_NUM >= 150000
		elog(ERROR, "could not compute the SHA-256 of the payload: %s", pg_cryptohash_error(ctx));
#else
		elog(ERROR, "could not compute the SHA-256 of the payload");
#endif
	pg_cryptohash_free(ctx);
#else
	pg_sha256_ctx ctx;

	pg_sha256_init(&ctx);
	pg_sha256_update(&ctx, (const uint8 *) text, len);
	pg_sha256_final(&ctx, digest);
#endif
	pfree(text);
}

/* How a recorded delivery compares with the one being handled. */
typedef enum DeliveryMatch
{
	DELIVERY_SAME,
	DELIVERY_OTHER_JOB,
	DELIVERY_OTHER_PAYLOAD
} DeliveryMatch;

/*
 * The recorded result of a delivery, marked as a duplicate; NULL if unknown.
 * Raises 23505 when the id was recorded for another job or another payload.
 * A part that was not recorded is not compared: deliveries recorded before
 * 1.1 have no payload digest, and match on the job alone.
 * Asked before the job lock and, when another transaction was in the way,
 * again after it (delivery_fetch sees what committed meanwhile).
 */
static Jsonb *
find_delivery(const Delivery *delivery, const pg_uuid_t *job_id)
{
	RecordedDelivery  recorded;
	DeliveryMatch     match = DELIVERY_SAME;
	JsonObjectBuilder b;
	Jsonb            *result;

	if (!delivery_fetch(delivery->id, &recorded))
		return NULL;
	if (recorded.has_job && memcmp(&recorded.job_id, job_id, sizeof(pg_uuid_t)) != 0)
		match = DELIVERY_OTHER_JOB;
	else if (recorded.payload_sha256 != NULL &&
			 (VARSIZE_ANY_EXHDR(recorded.payload_sha256) != PG_SHA256_DIGEST_LENGTH ||
			  memcmp(VARDATA_ANY(recorded.payload_sha256), delivery->payload_sha256,
					 PG_SHA256_DIGEST_LENGTH) != 0))
		match = DELIVERY_OTHER_PAYLOAD;

	if (match != DELIVERY_SAME)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("delivery id \"%s\" was already used for another callback", delivery->id),
				 match == DELIVERY_OTHER_JOB
					 ? errdetail("It was recorded for another job.")
					 : errdetail("It was recorded for the same job with another payload."),
				 errhint("A delivery id names one callback; send a new callback with a new id.")));

	json_begin(&b);
	json_add_bool(&b, "duplicate", true);
	result = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, JsonbPGetDatum(recorded.result),
												JsonbPGetDatum(json_end(&b))));
	/* Out of the SPI procedure context, which SPI_finish frees. */
	return DatumGetJsonbP(SPI_datumTransfer(JsonbPGetDatum(result), false, -1));
}
