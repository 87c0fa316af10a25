/*
 * fuzz_standard.c - Standard Webhooks headers (webhook-id, webhook-timestamp,
 * the space-separated webhook-signature list) parsing and verification.
 *
 * Input: id '\n' timestamp '\n' signature '\n' raw body; a field the input
 * does not reach is an absent header (an empty one counts as absent too).
 * Verification must agree with an independent model of the scheme: accept
 * exactly when the id is present, the timestamp is Unix seconds within the
 * tolerance (inclusive) and some "v1,<base64>" entry is the HMAC of
 * "id.timestamp.body" under one of the secrets; the correct entry appended
 * to any fuzzed list is accepted; and with --schemes github no Standard
 * Webhooks signature is ever verified.
 */
#include "fuzz.h"
#include "verify.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#define NOW       1614265330
#define TOLERANCE 300

/* The published Standard Webhooks secret and the GitHub vector's secret. */
static const char secret_text[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\r\n"
								  "\n"
								  "It's a Secret to Everybody\n";

static struct secrets secrets;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void) argc;
	(void) argv;
	fuzz_load_secrets("fuzz_standard", secret_text, sizeof secret_text - 1, &secrets);
	return 0;
}

/* "v1," and the base64 HMAC of id.timestamp.body under key. */
static void
entry_for(const struct secret *key, const char *id, const char *ts, const unsigned char *body,
		  size_t len, char out[48])
{
	size_t         idlen = strlen(id);
	size_t         tslen = strlen(ts);
	size_t         total = idlen + tslen + 2 + len;
	unsigned char *msg = malloc(total ? total : 1);
	unsigned char  mac[EVP_MAX_MD_SIZE];
	unsigned int   maclen = 0;

	memcpy(msg, id, idlen);
	msg[idlen] = '.';
	memcpy(msg + idlen + 1, ts, tslen);
	msg[idlen + 1 + tslen] = '.';
	memcpy(msg + idlen + tslen + 2, body, len);
	fuzz_check(HMAC(EVP_sha256(), key->key, (int) key->len, msg, total, mac, &maclen) != NULL &&
			   maclen == 32);
	free(msg);
	memcpy(out, "v1,", 3);
	fuzz_check(EVP_EncodeBlock((unsigned char *) out + 3, mac, 32) == 44);
}

static bool
timestamp_ok(const char *ts)
{
	long long v = 0;
	size_t    n = ts ? strlen(ts) : 0;

	if (n == 0 || n > 18)
		return false;
	for (size_t i = 0; i < n; i++)
	{
		if (ts[i] < '0' || ts[i] > '9')
			return false;
		v = v * 10 + (ts[i] - '0');
	}
	return v >= NOW - TOLERANCE && v <= NOW + TOLERANCE;
}

/* Does the space-separated list hold one of the expected entries / any v1? */
static void
scan_list(const char *list, char expected[][48], int nexpected, bool *match, bool *has_v1)
{
	const char *p = list;

	*match = false;
	*has_v1 = false;
	while (*p)
	{
		size_t len = strcspn(p, " ");

		if (len > 3 && strncmp(p, "v1,", 3) == 0)
			*has_v1 = true;
		for (int i = 0; i < nexpected; i++)
			if (len == 47 && memcmp(p, expected[i], 47) == 0)
				*match = true;
		p += len;
		while (*p == ' ')
			p++;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_fields   f;
	const char          *id;
	const char          *ts;
	const char          *sig;
	enum verify_status   st;
	bool                 usable;
	bool                 match = false;
	bool                 has_v1 = false;
	char                 expected[SECRETS_MAX][48];
	struct verify_input  in;
	struct verify_result r;
	enum verify_scheme   scheme;

	fuzz_split(data, size, 3, &f);
	id = f.str[0];
	ts = f.str[1];
	sig = f.str[2];

	st = verify_standard(&secrets, id, ts, sig, f.raw, f.raw_len, NOW, TOLERANCE);
	usable = id != NULL && id[0] != '\0' && timestamp_ok(ts);
	if (usable)
	{
		for (int i = 0; i < secrets.count; i++)
			entry_for(&secrets.items[i], id, ts, f.raw, f.raw_len, expected[i]);
		if (sig != NULL)
			scan_list(sig, expected, secrets.count, &match, &has_v1);
	}

	if (sig == NULL)
		fuzz_check(st == VERIFY_MISSING);
	else if (!usable)
		fuzz_check(st == VERIFY_MALFORMED || st == VERIFY_TIMESTAMP);
	else if (match)
		fuzz_check(st == VERIFY_OK);
	else
		fuzz_check(st == (has_v1 ? VERIFY_MISMATCH : VERIFY_MALFORMED));

	/* Standard Webhooks wins over a GitHub header sent alongside. */
	memset(&in, 0, sizeof in);
	in.hub_signature = "sha256=00";
	in.webhook_id = id;
	in.webhook_timestamp = ts;
	in.webhook_signature = sig;
	in.body = f.raw;
	in.body_len = f.raw_len;
	in.now = NOW;
	in.tolerance = TOLERANCE;
	scheme = verify_choose_scheme(&in, SCHEMES_STANDARD | SCHEMES_GITHUB);
	verify_request(&secrets, &in, scheme, SCHEMES_STANDARD | SCHEMES_GITHUB, &r);
	/* an empty header counts as absent */
	fuzz_check((scheme == SCHEME_STANDARD) == (sig != NULL && sig[0] != '\0'));
	if (sig != NULL && sig[0] != '\0')
	{
		fuzz_check(r.status == st);
		fuzz_check((st == VERIFY_OK) == (r.message[0] == '\0'));
		if (st != VERIFY_OK)
			fuzz_check(strstr(r.message, "webhook-") != NULL);
	}
	else
		fuzz_check(scheme == SCHEME_GITHUB && r.status == VERIFY_MALFORMED);
	fuzz_check(memchr(r.message, '\0', sizeof r.message) != NULL);

	in.hub_signature = NULL;
	scheme = verify_choose_scheme(&in, SCHEMES_GITHUB);
	fuzz_check(scheme == SCHEME_NONE);
	verify_request(&secrets, &in, scheme, SCHEMES_GITHUB, &r);
	fuzz_check(r.status == (sig != NULL && sig[0] != '\0' ? VERIFY_SCHEME : VERIFY_MISSING));

	if (usable)
	{
		/* the right entry after any fuzzed list, from every secret */
		size_t siglen = sig ? strlen(sig) : 0;
		char  *list = malloc(siglen + 49);

		for (int i = 0; i < secrets.count; i++)
		{
			memcpy(list, sig ? sig : "", siglen);
			list[siglen] = ' ';
			memcpy(list + siglen + 1, expected[i], 48);
			fuzz_check(verify_standard(&secrets, id, ts, list, f.raw, f.raw_len, NOW, TOLERANCE) ==
					   VERIFY_OK);
		}
		free(list);
	}

	fuzz_free(&f);
	return 0;
}
