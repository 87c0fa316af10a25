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

/* Columns of provision.callback_deliveries */
#define DELIVERY_JOB_ID_ATTNUM         2
#define DELIVERY_RESULT_ATTNUM         4
#define DELIVERY_PAYLOAD_SHA256_ATTNUM 5

static void        parse_callback(Jsonb *payload, Callback *cb);
static JsonbValue *get_field(Jsonb *payload, const char *key);
static const char *json_type_name(const JsonbValue *v);
static char       *string_field(const JsonbValue *v, const char *key);
static int         hex_value(char c);
static bool        parse_uuid(const char *src, pg_uuid_t *uuid);
static Datum       inet_field(const JsonbValue *v, const char *key);
static bool        run_number_field(Jsonb *payload, const char *key, int64 *value);
static void        check_delivery_id(const char *delivery_id);
static void        payload_sha256(Jsonb *payload, uint8 *digest);
static Jsonb      *find_delivery(const Delivery *delivery, const pg_uuid_t *job_id);

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
			job_apply(&job, to, decision, job_event_kind(to), cb.error,
					  cb.has_metadata ? &cb.metadata : NULL, action, delivery, false, &step);
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
	static const char *const metadata_keys[] = {"server_id", "server_ip", "tailscale_ip"};
	JsonbValue              *metadata[lengthof(metadata_keys)];
	JsonbValue              *v;
	char                    *text;
	int                      present = 0;
	int                      i;

	if (!JB_ROOT_IS_OBJECT(payload))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("callback payload must be a JSON object"),
				 errdetail("Got a JSON %s.", JB_ROOT_IS_SCALAR(payload) ? "scalar" : "array")));

	v = get_field(payload, "job_id");
	if (v == NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("missing \"job_id\" in callback payload")));
	text = string_field(v, "job_id");
	if (!parse_uuid(text, &cb->job_id))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid \"job_id\" in callback payload"), errdetail("Expected a uuid.")));

	v = get_field(payload, "status");
	if (v == NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("missing \"status\" in callback payload")));
	text = string_field(v, "status");
	for (i = 0; i < lengthof(callback_statuses); i++)
		if (strcmp(text, callback_statuses[i].name) == 0)
			break;
	if (i == lengthof(callback_statuses))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid \"status\" in callback payload"),
						errdetail("Expected one of provisioning, running, failed, heartbeat.")));
	cb->status = callback_statuses[i].status;

	cb->has_metadata = false;
	cb->error = NULL;
	cb->run.run_url = NULL;
	cb->has_run = run_number_field(payload, "run_id", &cb->run.run_id);
	if (!run_number_field(payload, "run_attempt", &cb->run.run_attempt))
		cb->run.run_attempt = 0;

	if (cb->status == CALLBACK_FAILED && (v = get_field(payload, "error")) != NULL)
	{
		cb->error = string_field(v, "error");
		check_error_text(cb->error, "\"error\" in callback payload");
	}

	if (cb->status != CALLBACK_RUNNING)
		return;

	for (i = 0; i < lengthof(metadata_keys); i++)
	{
		metadata[i] = get_field(payload, metadata_keys[i]);
		if (metadata[i] != NULL)
			present++;
	}
	if (present == 0)
		return;
	for (i = 0; i < lengthof(metadata_keys); i++)
		if (metadata[i] == NULL)
			ereport(
				ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("missing \"%s\" in callback payload", metadata_keys[i]),
				 errdetail(
					 "A running callback carries all of server_id, server_ip and tailscale_ip, or none of them.")));

	/* Hetzner sends server ids as numbers; they are stored as their text. */
	if (metadata[0]->type == jbvNumeric)
		cb->metadata.server_id = DatumGetCString(
			DirectFunctionCall1(numeric_out, NumericGetDatum(metadata[0]->val.numeric)));
	else if (metadata[0]->type == jbvString)
		cb->metadata.server_id = string_field(metadata[0], "server_id");
	else
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid \"server_id\" in callback payload"),
						errdetail("Expected a JSON string or number, got a JSON %s.",
								  json_type_name(metadata[0]))));
	check_server_id(cb->metadata.server_id, " in callback payload");
	cb->metadata.server_ip = inet_field(metadata[1], "server_ip");
	cb->metadata.tailscale_ip = inet_field(metadata[2], "tailscale_ip");
	cb->has_metadata = true;
}

/* The value of a top-level key; NULL when absent or JSON null. */
static JsonbValue *
get_field(Jsonb *payload, const char *key)
{
	JsonbValue  k;
	JsonbValue *v;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v = findJsonbValueFromContainer(&payload->root, JB_FOBJECT, &k);
	if (v != NULL && v->type == jbvNull)
		return NULL;
	return v;
}

static const char *
json_type_name(const JsonbValue *v)
{
	switch (v->type)
	{
		case jbvString:
			return "string";
		case jbvNumeric:
			return "number";
		case jbvBool:
			return "boolean";
		case jbvBinary:
			return JsonContainerIsObject(v->val.binary.data) ? "object" : "array";
		default:
			return "value";
	}
}

/* The field as a C string; 22023 unless it is a JSON string. */
static char *
string_field(const JsonbValue *v, const char *key)
{
	if (v->type != jbvString)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid \"%s\" in callback payload", key),
						errdetail("Expected a JSON string, got a JSON %s.", json_type_name(v))));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Parses a uuid with the syntax uuid_in accepts (optional braces, a hyphen
 * allowed after any group of four hex digits) without raising its generic
 * error, so the message can name the field.
 */
static bool
parse_uuid(const char *src, pg_uuid_t *uuid)
{
	bool braces = false;

	if (*src == '{')
	{
		src++;
		braces = true;
	}
	for (int i = 0; i < UUID_LEN; i++)
	{
		int hi, lo;

		if (src[0] == '\0' || src[1] == '\0')
			return false;
		hi = hex_value(src[0]);
		lo = hex_value(src[1]);
		if (hi < 0 || lo < 0)
			return false;
		uuid->data[i] = (unsigned char) (hi << 4 | lo);
		src += 2;
		if (src[0] == '-' && (i % 2) == 1 && i < UUID_LEN - 1)
			src++;
	}
	if (braces)
	{
		if (*src != '}')
			return false;
		src++;
	}
	return *src == '\0';
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
	JsonbValue *v = get_field(payload, key);
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
								  json_type_name(v))));

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
 *
 * Every callback with a delivery id asks this, so it reads the primary key
 * of provision.callback_deliveries directly rather than through SPI: the
 * executor's set-up and tear-down for one index probe cost several times the
 * probe itself. The snapshot is the one a new SQL statement would get (under
 * READ COMMITTED, taken now, after the job lock was granted), so it sees a
 * concurrent twin that committed while this call waited for the lock.
 */
static Jsonb *
find_delivery(const Delivery *delivery, const pg_uuid_t *job_id)
{
	RowProbe      probe;
	Jsonb        *result = NULL;
	DeliveryMatch match = DELIVERY_SAME;

	row_probe_begin(&probe, "callback_deliveries", NULL, AccessShareLock);
	if (RelationGetDescr(probe.rel)->natts < DELIVERY_PAYLOAD_SHA256_ATTNUM)
		schema_outdated("callback_deliveries", "payload_sha256");
	if (row_probe_fetch(&probe, F_TEXTEQ, CStringGetTextDatum(delivery->id)))
	{
		bool              isnull;
		Datum             recorded;
		JsonObjectBuilder b;

		recorded = slot_getattr(probe.slot, DELIVERY_JOB_ID_ATTNUM, &isnull);
		if (!isnull && memcmp(DatumGetUUIDP(recorded), job_id, sizeof(pg_uuid_t)) != 0)
			match = DELIVERY_OTHER_JOB;
		recorded = slot_getattr(probe.slot, DELIVERY_PAYLOAD_SHA256_ATTNUM, &isnull);
		if (!isnull && match == DELIVERY_SAME)
		{
			bytea *digest = DatumGetByteaPP(recorded);

			if (VARSIZE_ANY_EXHDR(digest) != PG_SHA256_DIGEST_LENGTH ||
				memcmp(VARDATA_ANY(digest), delivery->payload_sha256, PG_SHA256_DIGEST_LENGTH) != 0)
				match = DELIVERY_OTHER_PAYLOAD;
		}

		recorded = slot_getattr(probe.slot, DELIVERY_RESULT_ATTNUM, &isnull);
		if (isnull)
			elog(ERROR, "delivery %s has no recorded result", delivery->id);
		if (match == DELIVERY_SAME)
		{
			json_begin(&b);
			json_add_bool(&b, "duplicate", true);
			result = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat,
														PointerGetDatum(PG_DETOAST_DATUM(recorded)),
														JsonbPGetDatum(json_end(&b))));
		}
	}
	row_probe_end(&probe);

	if (match != DELIVERY_SAME)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("delivery id \"%s\" was already used for another callback", delivery->id),
				 match == DELIVERY_OTHER_JOB
					 ? errdetail("It was recorded for another job.")
					 : errdetail("It was recorded for the same job with another payload."),
				 errhint("A delivery id names one callback; send a new callback with a new id.")));

	/* Out of the SPI procedure context, which SPI_finish frees. */
	if (result != NULL)
		result = DatumGetJsonbP(SPI_datumTransfer(JsonbPGetDatum(result), false, -1));
	return result;
}
