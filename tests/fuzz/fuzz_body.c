/*
 * fuzz_body.c - request body validation as the listener does it before any
 * database work: the Content-Type check, then parse_callback_body (JSON,
 * nothing but whitespace after the value, an object), then the job_id and
 * duplicate lookups on the parsed object.
 *
 * Input: the Content-Type value, '\n', then the raw body, given to the parser
 * in a buffer of exactly its length (no terminating NUL), so a read past the
 * declared length is caught.  Properties: a body is accepted only as an
 * object without a repeated top-level key (checked here pairwise, apart from
 * the parser's sort), which prints and re-parses to an object with the same
 * job_id; refusals carry a message for the 400 body.
 */
#include "fuzz.h"
#include "respond.h"

#include <strings.h>

static bool
json_media_type(const char *ct)
{
	const char *p = ct;

	while (*p == ' ' || *p == '\t')
		p++;
	if (strncasecmp(p, "application/json", 16) != 0)
		return false;
	p += 16;
	while (*p == ' ' || *p == '\t')
		p++;
	return *p == '\0' || *p == ';';
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_fields f;
	cJSON             *obj;
	char               err[160];
	char               job_id[64];
	const char        *jid;

	fuzz_split(data, size, 1, &f);

	if (f.str[0] == NULL)
		fuzz_check(!content_type_is_json(NULL));
	else
		fuzz_check(content_type_is_json(f.str[0]) == json_media_type(f.str[0]));

	err[0] = '\0';
	obj = parse_callback_body((const char *) f.raw, f.raw_len, err, sizeof err);
	if (obj == NULL)
		fuzz_check(err[0] != '\0' && memchr(err, '\0', sizeof err) != NULL);
	else
	{
		char       *text;
		cJSON      *again;
		char        job_id2[64];
		const char *jid2;

		fuzz_check(cJSON_IsObject(obj));
		for (const cJSON *a = obj->child; a != NULL; a = a->next)
			for (const cJSON *b = a->next; b != NULL; b = b->next)
				fuzz_check(strcmp(a->string, b->string) != 0);
		jid = json_job_id(obj, job_id, sizeof job_id);
		if (jid != NULL)
			fuzz_check(jid == job_id && strlen(jid) < sizeof job_id);
		(void) result_is_duplicate(obj);

		text = cJSON_PrintUnformatted(obj);
		fuzz_check(text != NULL);
		again = parse_callback_body(text, strlen(text), err, sizeof err);
		fuzz_check(again != NULL);
		jid2 = json_job_id(again, job_id2, sizeof job_id2);
		fuzz_check((jid == NULL) == (jid2 == NULL));
		if (jid != NULL)
			fuzz_check(strcmp(jid, jid2) == 0);
		fuzz_check(result_is_duplicate(obj) == result_is_duplicate(again));
		cJSON_Delete(again);
		cJSON_free(text);
		cJSON_Delete(obj);
	}

	fuzz_free(&f);
	return 0;
}
