/*
 * fuzz_stripe.c - the Stripe-Signature header parser and Stripe event
 * verification.
 *
 * Input: the header value, '\n', then the raw body.  Properties: a header
 * that parses is at most STRIPE_HEADER_MAX printable bytes without spaces,
 * starts with t=, and holds 1..STRIPE_V1_MAX v1 signatures, each spelled
 * in the header; verification of a parsed header within the tolerance
 * accepts exactly when one of its v1= elements is the HMAC of "t.body"
 * under one of the secrets (computed here independently); the correct v1
 * appended to any parsed header is accepted; a refusal names the header
 * and never echoes it.
 */
#include "fuzz.h"
#include "verify.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <strings.h>

#define NOW       1700000000
#define TOLERANCE 300

/* Stripe keys with the secret text as given, whsec_ included. */
static const char secret_text[] = "whsec_5c0Vq1fV9q8Xh7TQ3mLhUo2YpK4rW6sZ\n"
								  "whsec_rolled0new0secret0ZmFrZQ\n";

static struct secrets secrets;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char err[200];

	(void) argc;
	(void) argv;
	if (!secrets_parse(secret_text, sizeof secret_text - 1, SECRET_FORM_EXACT, &secrets, err,
					   sizeof err) ||
		secrets.count != 2)
	{
		fprintf(stderr, "fuzz_stripe: secrets_parse: %s\n", err);
		abort();
	}
	return 0;
}

/* "v1=" and the lowercase hex HMAC of "t.body" under key. */
static void
element_for(const struct secret *key, const char *t, size_t tlen, const unsigned char *body,
			size_t len, char out[68])
{
	unsigned char *msg = malloc(tlen + 1 + len);
	unsigned char  mac[EVP_MAX_MD_SIZE];
	unsigned int   maclen = 0;

	memcpy(msg, t, tlen);
	msg[tlen] = '.';
	memcpy(msg + tlen + 1, body, len);
	fuzz_check(HMAC(EVP_sha256(), key->key, (int) key->len, msg, tlen + 1 + len, mac, &maclen) !=
				   NULL &&
			   maclen == 32);
	free(msg);
	memcpy(out, "v1=", 3);
	for (int i = 0; i < 32; i++)
		snprintf(out + 3 + 2 * i, 3, "%02x", mac[i]);
}

/* Is one of the header's comma-separated elements this v1= element (any hex case)? */
static bool
has_element(const char *header, const char *element)
{
	const char *p = header;

	for (;;)
	{
		size_t len = strcspn(p, ",");

		if (len == 67 && strncmp(p, "v1=", 3) == 0 && strncasecmp(p, element, 67) == 0)
			return true;
		if (p[len] == '\0')
			return false;
		p += len + 1;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_fields      f;
	const char             *header;
	struct stripe_signature sig;
	const char             *problem;
	const char             *vproblem;
	enum verify_status      st;
	char                    expected[SECRETS_MAX][68];

	fuzz_split(data, size, 1, &f);
	header = f.str[0];

	problem = stripe_parse_signature(header, &sig);
	st = verify_stripe(&secrets, header, f.raw, f.raw_len, NOW, TOLERANCE, &vproblem);
	if (problem != NULL)
	{
		fuzz_check(strstr(problem, "Stripe-Signature") != NULL);
		fuzz_check(st == (header == NULL || header[0] == '\0' ? VERIFY_MISSING : VERIFY_MALFORMED));
		fuzz_check(vproblem == problem);
		fuzz_free(&f);
		return 0;
	}

	/* what a parsed header looks like */
	fuzz_check(header != NULL && strlen(header) <= STRIPE_HEADER_MAX);
	for (const char *p = header; *p; p++)
		fuzz_check((unsigned char) *p > ' ' && (unsigned char) *p < 0x7f);
	fuzz_check(strncmp(header, "t=", 2) == 0 && sig.timestamp == header + 2);
	fuzz_check(sig.timestamp_len >= 1 && sig.timestamp_len <= 18);
	fuzz_check(sig.nv1 >= 1 && sig.nv1 <= STRIPE_V1_MAX);
	for (int v = 0; v < sig.nv1; v++)
	{
		char hex[68] = "v1=";

		for (int i = 0; i < 32; i++)
			snprintf(hex + 3 + 2 * i, 3, "%02x", sig.v1[v][i]);
		fuzz_check(has_element(header, hex));
	}

	/* verification against the independent HMAC */
	for (int i = 0; i < secrets.count; i++)
		element_for(&secrets.items[i], sig.timestamp, sig.timestamp_len, f.raw, f.raw_len,
					expected[i]);
	if (sig.t < NOW - TOLERANCE || sig.t > NOW + TOLERANCE)
		fuzz_check(st == VERIFY_TIMESTAMP);
	else
	{
		bool match = false;

		for (int i = 0; i < secrets.count; i++)
			match = match || has_element(header, expected[i]);
		fuzz_check(st == (match ? VERIFY_OK : VERIFY_MISMATCH));
		fuzz_check((st == VERIFY_OK) == (vproblem == NULL));

		/* the right signature appended, while there is room for it */
		if (sig.nv1 < STRIPE_V1_MAX && strlen(header) + 68 <= STRIPE_HEADER_MAX)
			for (int i = 0; i < secrets.count; i++)
			{
				char *longer = malloc(strlen(header) + 69);

				sprintf(longer, "%s,%s", header, expected[i]);
				fuzz_check(verify_stripe(&secrets, longer, f.raw, f.raw_len, NOW, TOLERANCE,
										 &vproblem) == VERIFY_OK);
				free(longer);
			}
	}
	if (vproblem != NULL)
		fuzz_check(strstr(vproblem, header) == NULL || strlen(header) < 4);

	fuzz_free(&f);
	return 0;
}
