/*
 * test_dispatcher_jwt.c - the GitHub App JWT: its claims (iat a minute
 * back, exp ten minutes after iat, iss the App id), base64url without
 * padding (RFC 4648 vectors), and an RS256 signature equal to the one the
 * openssl command line made with the same key, which verifies with the
 * public key and fails once a claim is changed.
 */
#include "jwt.h"
#include "tap.h"
#include "test_keys.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <stdlib.h>

/*
 * printf '%s.%s' base64url('{"alg":"RS256","typ":"JWT"}') \
 *   base64url('{"iat":1699999940,"exp":1700000540,"iss":123456}') |
 *   openssl dgst -sha256 -sign key.pem | base64url
 */
static const char EXPECTED_TOKEN[] =
	"eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpYXQiOjE2OTk5OTk5NDAsImV4cCI6MTcwMDAwMDU"
	"0MCwiaXNzIjoxMjM0NTZ9.YzEYIPEPWH-H6I7MRUGas02p-WzGXvqwpKaphBrAMLcTuW8sio90pXI_o8"
	"dJg3DuvSTvX2eGvbX-bex741LAKAxYuGQzmi6FssEHZ1ZU8lzGekCanA092cByKaiWrPhG1tISGT82r7"
	"i5gnsbrLWwHQUWQn5FqlSDC4i_2zCDhRX3OnYvxa-IFrebF0lYggMd_RRpQmEy8zO96J2vF3ArRbJBVT"
	"oJ8uR0Po6YYAcUX8iNQcLrGH8LcpOQ-NmY-VEULUDO6CXTPDRya16gNZBE2fBMryMk7lNKj-2f_mVCnj"
	"Dodoy-2eDdMYk8e5wrILnA30tQoH7Y64pn-MQKt4Tj_Q";

static EVP_PKEY *
load_key(void)
{
	BIO      *bio = BIO_new_mem_buf(TEST_KEY, -1);
	EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);

	BIO_free(bio);
	return key;
}

/* Verifies an RS256 token's signature with the key's public half. */
static bool
verifies(EVP_PKEY *key, const char *token)
{
	const char   *dot = strrchr(token, '.');
	char          b64[1024];
	unsigned char sig[512];
	size_t        len;
	int           n;
	EVP_MD_CTX   *ctx;
	bool          ok;

	if (dot == NULL || strlen(dot + 1) + 4 >= sizeof b64)
		return false;
	/* back to standard base64 with padding for EVP_DecodeBlock */
	snprintf(b64, sizeof b64, "%s", dot + 1);
	for (char *p = b64; *p; p++)
		*p = *p == '-' ? '+' : *p == '_' ? '/' : *p;
	len = strlen(b64);
	while (len % 4 != 0)
		b64[len++] = '=';
	b64[len] = '\0';
	/* a 2048-bit key signs 256 bytes; DecodeBlock counts the padding's zeros too */
	n = EVP_DecodeBlock(sig, (const unsigned char *) b64, (int) len);
	if (n < 256)
		return false;
	ctx = EVP_MD_CTX_new();
	ok =
		EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
		EVP_DigestVerify(ctx, sig, 256, (const unsigned char *) token, (size_t) (dot - token)) == 1;
	EVP_MD_CTX_free(ctx);
	return ok;
}

static void
test_claims(void)
{
	char buf[256];

	ok(jwt_claims("123456", 1700000000, buf, sizeof buf), "claims for an App id");
	is_str(buf, "{\"iat\":1699999940,\"exp\":1700000540,\"iss\":123456}",
		   "iat 60 s back, exp 600 s after iat (540 s ahead), iss the App id as a number");
	ok(jwt_claims("Iv23liABCdef.1", 1700000000, buf, sizeof buf), "claims for a client id");
	is_str(buf, "{\"iat\":1699999940,\"exp\":1700000540,\"iss\":\"Iv23liABCdef.1\"}",
		   "a client id is a string");
	ok(!jwt_claims("123456", 1700000000, buf, 20), "a buffer too small is refused");
}

static void
test_base64url(void)
{
	static const struct
	{
		const char *in;
		size_t      len;
		const char *out;
	} v[] = {
		{"", 0, ""},
		{"f", 1, "Zg"},
		{"fo", 2, "Zm8"},
		{"foo", 3, "Zm9v"},
		{"foob", 4, "Zm9vYg"},
		{"fooba", 5, "Zm9vYmE"},
		{"foobar", 6, "Zm9vYmFy"},
		{"\xfb\xff", 2, "-_8"},
		{"\xff\xfe\xfd\xfc", 4, "__79_A"},
	};
	char out[64];

	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
	{
		ok(jwt_base64url((const unsigned char *) v[i].in, v[i].len, out, sizeof out),
		   "base64url of %zu bytes", v[i].len);
		is_str(out, v[i].out, "base64url vector %zu", i);
	}
	ok(!jwt_base64url((const unsigned char *) "foobar", 6, out, 8),
	   "an output buffer without room for the NUL is refused");
	ok(jwt_base64url((const unsigned char *) "foobar", 6, out, 9), "exactly enough room");
}

static void
test_sign(void)
{
	EVP_PKEY *key = load_key();
	char      err[256] = "";
	char     *token;
	char     *forged;
	char     *dot;

	ok(key != NULL, "the test key loads");
	token =
		jwt_sign(key, "{\"iat\":1699999940,\"exp\":1700000540,\"iss\":123456}", err, sizeof err);
	ok(token != NULL, "signed (%s)", err);
	is_str(token, EXPECTED_TOKEN,
		   "the token openssl dgst -sha256 -sign made (RS256 is deterministic)");
	ok(verifies(key, token), "the signature verifies with the public key");

	/* the same signature over other claims must not verify */
	forged = strdup(token);
	dot = strchr(forged, '.');
	dot[5] ^= 1;
	ok(!verifies(key, forged), "a changed claim breaks the signature");
	free(forged);
	free(token);
	EVP_PKEY_free(key);
}

int
main(void)
{
	test_claims();
	test_base64url();
	test_sign();
	return done_testing();
}
