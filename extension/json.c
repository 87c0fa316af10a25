/*
 * json.c
 *		Building the small JSON objects the extension produces: callback
 *		results, event details.
 */
#include "provision.h"

#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/numeric.h"

static void json_push_key(JsonObjectBuilder *b, const char *key);

void
json_begin(JsonObjectBuilder *b)
{
	b->state = NULL;
	b->empty = true;
	pushJsonbValue(&b->state, WJB_BEGIN_OBJECT, NULL);
}

static void
json_push_key(JsonObjectBuilder *b, const char *key)
{
	JsonbValue k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(&b->state, WJB_KEY, &k);
	b->empty = false;
}

/* Adds key: value; a NULL value leaves the key out. */
void
json_add_text(JsonObjectBuilder *b, const char *key, const char *value)
{
	JsonbValue v;

	if (value == NULL)
		return;
	json_push_key(b, key);
	v.type = jbvString;
	v.val.string.val = (char *) value;
	v.val.string.len = strlen(value);
	pushJsonbValue(&b->state, WJB_VALUE, &v);
}

void
json_add_bool(JsonObjectBuilder *b, const char *key, bool value)
{
	JsonbValue v;

	json_push_key(b, key);
	v.type = jbvBool;
	v.val.boolean = value;
	pushJsonbValue(&b->state, WJB_VALUE, &v);
}

/* Adds key: value as a JSON number. */
void
json_add_int64(JsonObjectBuilder *b, const char *key, int64 value)
{
	JsonbValue v;

	json_push_key(b, key);
	v.type = jbvNumeric;
	v.val.numeric = DatumGetNumeric(DirectFunctionCall1(int8_numeric, Int64GetDatum(value)));
	pushJsonbValue(&b->state, WJB_VALUE, &v);
}

void
json_add_uuid(JsonObjectBuilder *b, const char *key, const pg_uuid_t *value)
{
	json_add_text(b, key, uuid_to_cstring(value));
}

/* Finishes the object; an object with no keys gives NULL (no detail). */
Jsonb *
json_end(JsonObjectBuilder *b)
{
	JsonbValue *v = pushJsonbValue(&b->state, WJB_END_OBJECT, NULL);

	if (b->empty)
		return NULL;
	return JsonbValueToJsonb(v);
}

char *
uuid_to_cstring(const pg_uuid_t *uuid)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(uuid)));
}
