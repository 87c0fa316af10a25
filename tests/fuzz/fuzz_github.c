/*
 * fuzz_github.c - X-Hub-Signature-256 parsing and verification.
 *
 * Input: the header value, '\n', then the raw body.  Besides surviving any
 * input, verification must agree with an independent HMAC: it accepts the
 * fuzzed header only when the header really is the body's signature under
 * one of the secrets (hex in either case), and it always accepts the correct
 * signature of the fuzzed body, from every secret of a rotation.
 */
#include "fuzz.h"
#include "verify.h"

#include <strings.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/* The published GitHub vector's secret and a Standard Webhooks one. */
static const char secret_text[] = "It's a Secret to Everybody\n"
								  "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n";

static struct secrets secrets;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void) argc;
	(void) argv;
	fuzz_load_secrets("fuzz_github", secret_text, sizeof secret_text - 1, &secrets);
	return 0;
}

static void
signature_header(const struct secret *key, const unsigned char *body, size_t len, bool upper,
				 char out[72])
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int  maclen = 0;
	const char   *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";

	fuzz_check(HMAC(EVP_sha256(), key->key, (int) key->len, body, len, mac, &maclen) != NULL &&
			   maclen == 32);
	memcpy(out, "sha256=", 7);
	for (int i = 0; i < 32; i++)
	{
		out[7 + 2 * i] = digits[mac[i] >> 4];
		out[7 + 2 * i + 1] = digits[mac[i] & 15];
	}
	out[71] = '\0';
}

static bool
is_signature_of(const char *header, const unsigned char *body, size_t len)
{
	char expected[72];

	for (int i = 0; i < secrets.count; i++)
	{
		signature_header(&secrets.items[i], body, len, false, expected);
		if (strlen(header) == 71 && strncmp(header, "sha256=", 7) == 0 &&
			strcasecmp(header + 7, expected + 7) == 0)
			return true;
	}
	return false;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_fields   f;
	const char          *header;
	enum verify_status   st;
	struct verify_input  in;
	struct verify_result r;
	enum verify_scheme   scheme;
	char                 good[72];

	fuzz_split(data, size, 1, &f);
	header = f.str[0];

	st = verify_github(&secrets, header, f.raw, f.raw_len);
	if (header == NULL)
		fuzz_check(st == VERIFY_MISSING);
	else
	{
		fuzz_check(st == VERIFY_OK || st == VERIFY_MALFORMED || st == VERIFY_MISMATCH);
		fuzz_check((st == VERIFY_OK) == is_signature_of(header, f.raw, f.raw_len));
	}

	memset(&in, 0, sizeof in);
	in.hub_signature = header;
	in.body = f.raw;
	in.body_len = f.raw_len;
	in.now = 1614265330;
	in.tolerance = 300;
	scheme = verify_choose_scheme(&in, SCHEMES_GITHUB | SCHEMES_STANDARD);
	verify_request(&secrets, &in, scheme, SCHEMES_GITHUB | SCHEMES_STANDARD, &r);
	/* an empty header counts as absent */
	fuzz_check(r.status == (header && *header ? st : VERIFY_MISSING));
	fuzz_check(scheme == (header && *header ? SCHEME_GITHUB : SCHEME_NONE));
	fuzz_check((r.status == VERIFY_OK) == (r.message[0] == '\0'));
	fuzz_check(memchr(r.message, '\0', sizeof r.message) != NULL);
	fuzz_check(strstr(r.message, "Secret to Everybody") == NULL);

	/* --schemes standard: a GitHub signature, even a correct one, is refused */
	scheme = verify_choose_scheme(&in, SCHEMES_STANDARD);
	fuzz_check(scheme == SCHEME_NONE);
	verify_request(&secrets, &in, scheme, SCHEMES_STANDARD, &r);
	fuzz_check(r.status == (header && *header ? VERIFY_SCHEME : VERIFY_MISSING));
	fuzz_check(strstr(r.message, "accepted") != NULL || strstr(r.message, "missing") != NULL);

	for (int i = 0; i < secrets.count; i++)
	{
		signature_header(&secrets.items[i], f.raw, f.raw_len, i % 2 == 1, good);
		fuzz_check(verify_github(&secrets, good, f.raw, f.raw_len) == VERIFY_OK);
		/* one flipped hex digit: well formed, but no longer the signature */
		good[7 + f.raw_len % 64] = good[7 + f.raw_len % 64] == '0' ? '1' : '0';
		fuzz_check(verify_github(&secrets, good, f.raw, f.raw_len) == VERIFY_MISMATCH);
	}

	fuzz_free(&f);
	return 0;
}
