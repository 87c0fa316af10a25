/*
 * stripe.c
 *		handle_stripe_event: a verified Stripe event in, a provisioning job
 *		out.
 *
 * The listener verifies Stripe's signature and passes the event here. An
 * event whose type is listed in provision.stripe_event_types enqueues a job
 * for the agent its Checkout Session names, through the same step as
 * enqueue_job, with the idempotency key stripe:<event id>: Stripe delivers an
 * event at least once, and every delivery of it returns the one job. Every
 * other event is acknowledged and ignored, so Stripe stops sending it.
 */
#include "provision.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#define STRIPE_KEY_PREFIX "stripe:"

/* Where the agent's id is looked for, in this order. */
#define CLIENT_REFERENCE_FIELD "data.object.client_reference_id"
#define METADATA_AGENT_FIELD   "data.object.metadata.agent_id"

/* The one listed event type that is not yet a payment unless its status says so. */
#define SESSION_COMPLETED "checkout.session.completed"

/* The result object: unset fields (NULL, or has_job false) are left out. */
typedef struct StripeResult
{
	const char      *event_id;
	const char      *type;
	bool             enqueued; /* action: enqueued, else ignored */
	const pg_uuid_t *agent_id;
	bool             has_job;
	pg_uuid_t        job_id;
	bool             duplicate;
	const char      *reason;
} StripeResult;

static char           *required_string(JsonbContainer *object, const char *key, const char *field);
static char           *optional_string(JsonbContainer *object, const char *key, const char *field);
static JsonbContainer *required_object(JsonbContainer *object, const char *key, const char *field);
static bool            agent_reference(JsonbContainer *session, pg_uuid_t *agent_id);
static const char     *unpaid_reason(JsonbContainer *session);
static char           *idempotency_key(const char *event_id);
static Jsonb          *build_result(const StripeResult *r);

/*
 * provision.handle_stripe_event(event): what the listener calls for a
 * verified Stripe event. For an event type listed in
 * provision.stripe_event_types, enqueues a job for the agent named by the
 * Checkout Session's client_reference_id (else its metadata.agent_id) with
 * the idempotency key stripe:<event id>, unless it is a completed session
 * whose payment is still pending. Returns {event_id, type, action: enqueued
 * or ignored, job_id, agent_id, duplicate, reason}, the keys that do not
 * apply left out; a replay of an event returns its job with duplicate true.
 */
PG_FUNCTION_INFO_V1(handle_stripe_event);
Datum
handle_stripe_event(PG_FUNCTION_ARGS)
{
	Jsonb          *event;
	JsonbContainer *session;
	StripeResult    r = {0};
	pg_uuid_t       agent_id;
	char           *key;
	EnqueueOutcome  outcome;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("Stripe event must not be null")));
	event = PG_GETARG_JSONB_P(0);
	if (!JB_ROOT_IS_OBJECT(event))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("Stripe event must be a JSON object"),
				 errdetail("Got a JSON %s.", JB_ROOT_IS_SCALAR(event) ? "scalar" : "array")));
	r.event_id = required_string(&event->root, "id", "id");
	r.type = required_string(&event->root, "type", "type");

	/* Stripe sends whatever the endpoint subscribes to; the rest needs no answer but 200. */
	if (!stripe_event_type_listed(r.type))
	{
		r.reason = psprintf("event type %s is not in provision.stripe_event_types", r.type);
		PG_RETURN_JSONB_P(build_result(&r));
	}

	session =
		required_object(required_object(&event->root, "data", "data"), "object", "data.object");
	if (!agent_reference(session, &agent_id))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("missing agent reference in Stripe event: neither \"" CLIENT_REFERENCE_FIELD
						"\" nor \"" METADATA_AGENT_FIELD "\" is set"),
				 errdetail("Event %s of type %s.", r.event_id, r.type),
				 errhint("Create the Checkout Session with client_reference_id set to the "
						 "agent's id.")));
	r.agent_id = &agent_id;

	if (strcmp(r.type, SESSION_COMPLETED) == 0 && (r.reason = unpaid_reason(session)) != NULL)
		PG_RETURN_JSONB_P(build_result(&r));

	key = idempotency_key(r.event_id);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	outcome = job_enqueue(&agent_id, key, &r.job_id);
	SPI_finish();

	r.enqueued = true;
	r.has_job = true;
	r.duplicate = (outcome == ENQUEUE_KEY_KNOWN);
	if (outcome == ENQUEUE_OPEN_JOB)
		r.reason = "the agent already has an open job, returned instead of a new one; "
				   "the event id was not recorded";
	PG_RETURN_JSONB_P(build_result(&r));
}

/* A string field that must be present and not empty; 22023 naming it otherwise. */
static char *
required_string(JsonbContainer *object, const char *key, const char *field)
{
	char *value = optional_string(object, key, field);

	if (value == NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("missing \"%s\" in Stripe event", field)));
	if (value[0] == '\0')
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid \"%s\" in Stripe event", field),
						errdetail("Expected a non-empty string.")));
	return value;
}

/* A string field, or NULL when absent or JSON null; 22023 naming it for another type. */
static char *
optional_string(JsonbContainer *object, const char *key, const char *field)
{
	JsonbValue *v = json_object_get(object, key);

	if (v == NULL)
		return NULL;
	if (v->type != jbvString)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid \"%s\" in Stripe event", field),
						errdetail("Expected a JSON string, got a JSON %s.", json_value_type(v))));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* An object field that must be present; 22023 naming it otherwise. */
static JsonbContainer *
required_object(JsonbContainer *object, const char *key, const char *field)
{
	JsonbValue     *v = json_object_get(object, key);
	JsonbContainer *inner;

	if (v == NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("missing \"%s\" in Stripe event", field)));
	inner = json_value_object(v);
	if (inner == NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid \"%s\" in Stripe event", field),
						errdetail("Expected a JSON object, got a JSON %s.", json_value_type(v))));
	return inner;
}

/*
 * The agent the session was paid for: client_reference_id, which the app
 * sets when it creates the Checkout Session, else metadata.agent_id, for
 * payments created elsewhere (Payment Links, the API). The first one set
 * decides: a client_reference_id that is not a uuid is an error, not a
 * reason to look at the metadata. False when neither is set.
 */
static bool
agent_reference(JsonbContainer *session, pg_uuid_t *agent_id)
{
	const char *field = CLIENT_REFERENCE_FIELD;
	char       *reference = optional_string(session, "client_reference_id", field);

	if (reference == NULL)
	{
		JsonbValue     *v = json_object_get(session, "metadata");
		JsonbContainer *metadata;

		if (v == NULL)
			return false;
		metadata = json_value_object(v);
		if (metadata == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid \"data.object.metadata\" in Stripe event"),
					 errdetail("Expected a JSON object, got a JSON %s.", json_value_type(v))));
		field = METADATA_AGENT_FIELD;
		reference = optional_string(metadata, "agent_id", field);
		if (reference == NULL)
			return false;
	}
	if (!uuid_from_cstring(reference, agent_id))
		ereport(ERROR, (errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
						errmsg("invalid \"%s\" in Stripe event", field),
						errdetail("Expected an agent id (a uuid).")));
	return true;
}

/*
 * Why a completed Checkout Session does not count as paid yet, or NULL when
 * it does. A delayed payment method (a bank debit) completes the session
 * with payment_status unpaid; checkout.session.async_payment_succeeded
 * follows when the money arrives.
 */
static const char *
unpaid_reason(JsonbContainer *session)
{
	char *status = required_string(session, "payment_status", "data.object.payment_status");

	if (strcmp(status, "paid") == 0 || strcmp(status, "no_payment_required") == 0)
		return NULL;
	return psprintf("payment_status is %s, not paid or no_payment_required; "
					"checkout.session.async_payment_succeeded follows if the payment succeeds",
					status);
}

/* stripe:<event id>, within the length enqueue_job accepts for a key. */
static char *
idempotency_key(const char *event_id)
{
	int max_chars = PROVISION_MAX_IDEMPOTENCY_KEY_CHARS - (int) strlen(STRIPE_KEY_PREFIX);

	if (pg_mbstrlen_with_len(event_id, strlen(event_id)) > max_chars)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("invalid \"id\" in Stripe event"),
				 errdetail("Expected at most %d characters.", max_chars)));
	return psprintf(STRIPE_KEY_PREFIX "%s", event_id);
}

static Jsonb *
build_result(const StripeResult *r)
{
	JsonObjectBuilder b;

	json_begin(&b);
	json_add_text(&b, "event_id", r->event_id);
	json_add_text(&b, "type", r->type);
	json_add_text(&b, "action", r->enqueued ? "enqueued" : "ignored");
	if (r->has_job)
	{
		json_add_uuid(&b, "job_id", &r->job_id);
		json_add_bool(&b, "duplicate", r->duplicate);
	}
	if (r->agent_id != NULL)
		json_add_uuid(&b, "agent_id", r->agent_id);
	json_add_text(&b, "reason", r->reason);
	return json_end(&b);
}
