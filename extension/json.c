/*
 * json.c
 *		Building the small JSON objects the extension produces (callback
 *		and Stripe results, event details), and reading fields of the ones
 *		it is given.
 */
#include "provision.h"

#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/numeric.h"

static void json_push_key(JsonObjectBuilder *b, const char *key);
static int  hex_digit(char c);

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

/* The value of key in a JSON object; NULL when the key is absent or JSON null. */
JsonbValue *
json_object_get(JsonbContainer *object, const char *key)
{
	JsonbValue  k;
	JsonbValue *v;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v = findJsonbValueFromContainer(object, JB_FOBJECT, &k);
	if (v != NULL && v->type == jbvNull)
		return NULL;
	return v;
}

/* The JSON type of a value, for messages: "Expected a JSON string, got a JSON number." */
const char *
json_value_type(const JsonbValue *v)
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

/* The container of a value that is a JSON object; NULL for any other value. */
JsonbContainer *
json_value_object(const JsonbValue *v)
{
	if (v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data))
		return v->val.binary.data;
	return NULL;
}

static int
hex_digit(char c)
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
 * error, so that the caller's message can name the field; false when src is
 * not a uuid.
 */
bool
uuid_from_cstring(const char *src, pg_uuid_t *uuid)
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
		hi = hex_digit(src[0]);
		lo = hex_digit(src[1]);
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
