/*
 * test_verify.c - signature verification against the published vectors of
 * GitHub and Standard Webhooks, their negative cases, rotation, tolerance
 * edges and secret parsing.
 */
#include "tap.h"
#include "verify.h"

#include <stdlib.h>

#define GH_SECRET "It's a Secret to Everybody"
#define GH_BODY   "Hello, World!"
#define GH_SIG    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

#define SW_KEY  "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define SW_ID   "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define SW_TS   "1614265330"
#define SW_NOW  1614265330
#define SW_BODY "{\"test\": 2432232314}"
#define SW_SIG  "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

static struct secrets *
load(const char *text)
{
	static struct secrets s;
	char                  err[200];

	if (!secrets_parse(text, strlen(text), SECRET_FORM_WEBHOOK, &s, err, sizeof err))
	{
		printf("# secrets_parse failed: %s\n", err);
		s.count = 0;
	}
	return &s;
}

static enum verify_status
gh(const struct secrets *s, const char *header, const char *body)
{
	return verify_github(s, header, (const unsigned char *) body, strlen(body));
}

static enum verify_status
sw(const struct secrets *s, const char *id, const char *ts, const char *sig, const char *body,
   int64_t now)
{
	return verify_standard(s, id, ts, sig, (const unsigned char *) body, strlen(body), now, 300);
}

static void
test_github(void)
{
	struct secrets *s = load(GH_SECRET);
	char            upper[128];

	is_int(gh(s, GH_SIG, GH_BODY), VERIFY_OK, "github: published vector verifies");
	is_int(gh(s, GH_SIG, "Hello, World?"), VERIFY_MISMATCH, "github: other body refused");
	is_int(gh(load("It's a Secret to Everybody!"), GH_SIG, GH_BODY), VERIFY_MISMATCH,
		   "github: other secret refused");
	s = load(GH_SECRET);
	is_int(gh(s, NULL, GH_BODY), VERIFY_MISSING, "github: missing header");
	is_int(gh(s, "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", GH_BODY),
		   VERIFY_MALFORMED, "github: wrong prefix refused");
	is_int(
		gh(s, "SHA256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", GH_BODY),
		VERIFY_MALFORMED, "github: prefix is case-sensitive");
	is_int(gh(s, "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", GH_BODY),
		   VERIFY_MALFORMED, "github: bare hex refused");
	is_int(gh(s, "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1", GH_BODY),
		   VERIFY_MALFORMED, "github: 63 hex digits refused");
	is_int(
		gh(s, "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e177", GH_BODY),
		VERIFY_MALFORMED, "github: 65 hex digits refused");
	is_int(
		gh(s, "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1g", GH_BODY),
		VERIFY_MALFORMED, "github: non-hex digit refused");
	is_int(gh(s, "sha256=", GH_BODY), VERIFY_MALFORMED, "github: empty hex refused");
	is_int(
		gh(s, "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17 ", GH_BODY),
		VERIFY_MALFORMED, "github: trailing space refused");
	is_int(
		gh(s, "sha256=857107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", GH_BODY),
		VERIFY_MISMATCH, "github: one wrong digit refused");

	/* documented choice: hex case carries no information, both are accepted */
	strcpy(upper, GH_SIG);
	for (char *p = upper + 7; *p; p++)
		if (*p >= 'a' && *p <= 'f')
			*p = (char) (*p - 'a' + 'A');
	is_int(gh(s, upper, GH_BODY), VERIFY_OK, "github: uppercase hex accepted");
}

static void
test_standard(void)
{
	struct secrets *s = load(SW_KEY);

	is_int(sw(s, SW_ID, SW_TS, SW_SIG, SW_BODY, SW_NOW), VERIFY_OK,
		   "standard: published vector verifies");
	is_int(sw(s, "msg_p5jXN8AQM9LWM0D4loKWxJeK", SW_TS, SW_SIG, SW_BODY, SW_NOW), VERIFY_MISMATCH,
		   "standard: wrong id refused");
	is_int(sw(s, SW_ID, "1614265331", SW_SIG, SW_BODY, SW_NOW), VERIFY_MISMATCH,
		   "standard: wrong timestamp refused");
	is_int(sw(s, SW_ID, SW_TS, SW_SIG, "{\"test\": 2432232315}", SW_NOW), VERIFY_MISMATCH,
		   "standard: wrong body refused");
	is_int(
		sw(load("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx"), SW_ID, SW_TS, SW_SIG, SW_BODY, SW_NOW),
		VERIFY_MISMATCH, "standard: wrong key refused");
	s = load(SW_KEY);
	is_int(sw(s, SW_ID, SW_TS, "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", SW_BODY, SW_NOW),
		   VERIFY_MALFORMED, "standard: v2 entry alone is ignored");
	is_int(sw(s, SW_ID, SW_TS, "v2,xxx " SW_SIG, SW_BODY, SW_NOW), VERIFY_OK,
		   "standard: v2 entry skipped, v1 entry verifies");
	is_int(sw(s, SW_ID, SW_TS, "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= " SW_SIG " v1,Zm9v",
			  SW_BODY, SW_NOW),
		   VERIFY_OK, "standard: any of several entries matches");
	is_int(sw(s, SW_ID, SW_TS, "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= v1,Zm9v", SW_BODY,
			  SW_NOW),
		   VERIFY_MISMATCH, "standard: no matching entry refused");
	is_int(sw(s, SW_ID, SW_TS, "v1,!!!!not*base64!!!", SW_BODY, SW_NOW), VERIFY_MISMATCH,
		   "standard: bad base64 refused");
	is_int(sw(s, SW_ID, SW_TS, "v1,", SW_BODY, SW_NOW), VERIFY_MALFORMED,
		   "standard: empty v1 entry refused");
	is_int(sw(s, SW_ID, SW_TS, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", SW_BODY, SW_NOW),
		   VERIFY_MALFORMED, "standard: entry without version refused");
	is_int(sw(s, NULL, SW_TS, SW_SIG, SW_BODY, SW_NOW), VERIFY_MALFORMED,
		   "standard: missing webhook-id");
	is_int(sw(s, SW_ID, NULL, SW_SIG, SW_BODY, SW_NOW), VERIFY_MALFORMED,
		   "standard: missing webhook-timestamp");
	is_int(sw(s, SW_ID, SW_TS, NULL, SW_BODY, SW_NOW), VERIFY_MISSING,
		   "standard: missing webhook-signature");
}

static void
test_tolerance(void)
{
	struct secrets *s = load(SW_KEY);

	is_int(sw(s, SW_ID, SW_TS, SW_SIG, SW_BODY, SW_NOW + 300), VERIFY_OK,
		   "tolerance: exactly 300s in the past accepted");
	is_int(sw(s, SW_ID, SW_TS, SW_SIG, SW_BODY, SW_NOW - 300), VERIFY_OK,
		   "tolerance: exactly 300s in the future accepted");
	is_int(sw(s, SW_ID, SW_TS, SW_SIG, SW_BODY, SW_NOW + 301), VERIFY_TIMESTAMP,
		   "tolerance: 301s in the past refused");
	is_int(sw(s, SW_ID, SW_TS, SW_SIG, SW_BODY, SW_NOW - 301), VERIFY_TIMESTAMP,
		   "tolerance: 301s in the future refused");
	is_int(verify_standard(s, SW_ID, SW_TS, SW_SIG, (const unsigned char *) SW_BODY,
						   strlen(SW_BODY), SW_NOW, 0),
		   VERIFY_OK, "tolerance: zero accepts the exact second");
	is_int(sw(s, SW_ID, "16142653x0", SW_SIG, SW_BODY, SW_NOW), VERIFY_MALFORMED,
		   "tolerance: non-numeric timestamp refused");
	is_int(sw(s, SW_ID, "-1614265330", SW_SIG, SW_BODY, SW_NOW), VERIFY_MALFORMED,
		   "tolerance: signed timestamp refused");
	is_int(sw(s, SW_ID, "", SW_SIG, SW_BODY, SW_NOW), VERIFY_MALFORMED,
		   "tolerance: empty timestamp refused");
	is_int(sw(s, SW_ID, "99999999999999999999999", SW_SIG, SW_BODY, SW_NOW), VERIFY_MALFORMED,
		   "tolerance: overflowing timestamp refused");
	is_int(sw(s, SW_ID, "1614265330.5", SW_SIG, SW_BODY, SW_NOW), VERIFY_MALFORMED,
		   "tolerance: fractional timestamp refused");
}

static void
test_rotation(void)
{
	struct secrets *s = load("old-secret-0123456789\n" GH_SECRET "\n");

	is_int(s->count, 2, "rotation: two secrets loaded");
	is_int(gh(s, GH_SIG, GH_BODY), VERIFY_OK, "rotation: second secret verifies github");
	s = load("whsec_dGhlIG9sZCBrZXksIHNpeHRlZW4rIGJ5dGVz\n" SW_KEY "\n");
	is_int(sw(s, SW_ID, SW_TS, SW_SIG, SW_BODY, SW_NOW), VERIFY_OK,
		   "rotation: second secret verifies standard webhooks");
	s = load("old-secret-0123456789\n");
	is_int(gh(s, GH_SIG, GH_BODY), VERIFY_MISMATCH, "rotation: removed secret no longer verifies");
}

/* secrets_parse on a NUL-terminated text, the webhook form. */
static bool
parse_text(const char *text, struct secrets *s, char *err, size_t errlen)
{
	return secrets_parse(text, strlen(text), SECRET_FORM_WEBHOOK, s, err, errlen);
}

/* The text is refused with a message naming the line and not the secret. */
static void
refused(const char *text, int line, const char *needle, const char *secret, const char *what)
{
	struct secrets s;
	char           err[200];
	char           want[32];

	err[0] = '\0';
	snprintf(want, sizeof want, "line %d ", line);
	ok(!parse_text(text, &s, err, sizeof err), "secrets: %s is an error", what);
	ok(strstr(err, want) != NULL && strstr(err, needle) != NULL,
	   "secrets: %s: the message names line %d and says \"%s\" (%s)", what, line, needle, err);
	ok(secret == NULL || strstr(err, secret) == NULL, "secrets: %s: the secret is not in it", what);
	ok(s.count == 0 && s.items[0].len == 0, "secrets: %s: nothing kept", what);
}

static void
test_secrets_parse(void)
{
	struct secrets s;
	char           err[200];

	ok(parse_text("first-secret-0123\r\n\r\n\nsecond-secret-456\r\n", &s, err, sizeof err),
	   "secrets: CRLF and empty lines parse");
	is_int(s.count, 2, "secrets: empty lines skipped");
	ok(s.items[0].len == 17 && memcmp(s.items[0].key, "first-secret-0123", 17) == 0,
	   "secrets: trailing \\r stripped from the first");
	ok(s.items[1].len == 17 && memcmp(s.items[1].key, "second-secret-456", 17) == 0,
	   "secrets: second secret kept as raw bytes");
	ok(parse_text("last-without-newline", &s, err, sizeof err) && s.count == 1 &&
		   s.items[0].len == 20,
	   "secrets: last line without newline");
	ok(parse_text("It's a Secret to Everybody", &s, err, sizeof err) && s.items[0].len == 26,
	   "secrets: spaces inside a secret are part of it");
	ok(parse_text(SW_KEY, &s, err, sizeof err) && s.items[0].len == 24,
	   "secrets: whsec_ decoded to 24 bytes");
	/* "sixteen byte key" (==) and "first-secret-0123" (=) */
	ok(parse_text("whsec_c2l4dGVlbiBieXRlIGtleQ==", &s, err, sizeof err) && s.items[0].len == 16 &&
		   memcmp(s.items[0].key, "sixteen byte key", 16) == 0,
	   "secrets: whsec_ with == padding, exactly 16 bytes decoded");
	ok(parse_text("whsec_Zmlyc3Qtc2VjcmV0LTAxMjM=\n", &s, err, sizeof err) &&
		   s.items[0].len == 17 && memcmp(s.items[0].key, "first-secret-0123", 17) == 0,
	   "secrets: whsec_ with = padding has the right length");
	ok(parse_text("0123456789abcdef", &s, err, sizeof err) && s.items[0].len == 16,
	   "secrets: a raw secret of exactly 16 bytes");
	ok(parse_text("0123456789abcdef\r", &s, err, sizeof err) && s.items[0].len == 16,
	   "secrets: only one trailing CR, then 16 bytes");

	refused("good-secret-0123456789\nwhsec_not base64!\n", 2, "not valid base64", "not base64",
			"whsec_ with bad base64");
	refused("whsec_abc", 1, "base64", NULL, "whsec_ with a bad base64 length");
	refused("whsec_", 1, "base64", NULL, "empty whsec_");
	refused("good-secret-0123456789\n0123456789abcde\n", 2, "shorter than 16 bytes",
			"0123456789abcde", "a raw secret of 15 bytes");
	/* "fifteen bytes!!" */
	refused("whsec_ZmlmdGVlbiBieXRlcyEh\n", 1, "shorter than 16 bytes after base64 decoding",
			"ZmlmdGVlbiBieXRlcyEh", "a whsec_ secret decoding to 15 bytes");
	refused("good-secret-0123456789\n   \n", 2, "only whitespace", NULL, "a line of spaces");
	refused("good-secret-0123456789\n\t\r\n", 2, "only whitespace", NULL, "a line of a tab");
	refused(" leading-space-secret\n", 1, "starts or ends with whitespace", "leading-space-secret",
			"a secret with a leading space");
	refused("\n\ntrailing-space-secret \n", 3, "starts or ends with whitespace",
			"trailing-space-secret", "a secret with a trailing space (after empty lines)");
	refused("trailing-tab-secret-0\t\r\n", 1, "starts or ends with whitespace",
			"trailing-tab-secret", "a secret with a tab before the CRLF");
	refused("two-carriage-returns-0\r\r\n", 1, "starts or ends with whitespace",
			"two-carriage-returns", "a secret ending in two CRs");

	ok(!parse_text("\n\r\n", &s, err, sizeof err) && strstr(err, "no secret") != NULL,
	   "secrets: only empty lines is an error");
	ok(!parse_text("", &s, err, sizeof err), "secrets: empty text is an error");

	ok(secrets_parse("whsec_c2l4dGVlbiBieXRlIGtleQ==", 30, SECRET_FORM_EXACT, &s, err,
					 sizeof err) &&
		   s.items[0].len == 30 && memcmp(s.items[0].key, "whsec_c2l4", 10) == 0,
	   "secrets: the exact form keeps whsec_ and does not decode");
	ok(!secrets_parse("whsec_short", 11, SECRET_FORM_EXACT, &s, err, sizeof err) &&
		   strstr(err, "shorter than 16 bytes") != NULL && strstr(err, "decoding") == NULL,
	   "secrets: the exact form counts the bytes as given (%s)", err);
}

static void
test_base64(void)
{
	unsigned char out[64];
	size_t        len;

	ok(base64_decode("Zm9vYmFy", 8, out, sizeof out, &len) && len == 6 &&
		   memcmp(out, "foobar", 6) == 0,
	   "base64: no padding");
	ok(base64_decode("Zm9vYg==", 8, out, sizeof out, &len) && len == 4,
	   "base64: two padding characters");
	ok(base64_decode("Zm9vYmE=", 8, out, sizeof out, &len) && len == 5,
	   "base64: one padding character");
	ok(!base64_decode("Zm9vYmE", 7, out, sizeof out, &len), "base64: bad length");
	ok(!base64_decode("Zm9v=mFy", 8, out, sizeof out, &len), "base64: padding inside");
	ok(!base64_decode("Zm9v-mFy", 8, out, sizeof out, &len), "base64: url alphabet refused");
	ok(!base64_decode("Zm9vYmFy", 8, out, 5, &len), "base64: output too small");
}

/* verify_choose_scheme and verify_request as the HTTP side calls them. */
static void
request(const struct secrets *s, struct verify_input *in, unsigned int accepted,
		struct verify_result *r, enum verify_scheme *scheme)
{
	*scheme = verify_choose_scheme(in, accepted);
	verify_request(s, in, *scheme, accepted, r);
}

static void
test_request(void)
{
	struct secrets      *s = load(GH_SECRET);
	struct verify_input  in = {0};
	struct verify_result r;
	enum verify_scheme   scheme;
	const unsigned int   both = SCHEMES_STANDARD | SCHEMES_GITHUB;

	in.body = (const unsigned char *) GH_BODY;
	in.body_len = strlen(GH_BODY);
	in.now = SW_NOW;
	in.tolerance = 300;

	request(s, &in, both, &r, &scheme);
	ok(r.status == VERIFY_MISSING && scheme == SCHEME_NONE, "request: no headers is missing");
	ok(strstr(r.message, "X-Hub-Signature-256") && strstr(r.message, "webhook-signature"),
	   "request: message names both schemes (%s)", r.message);
	is_str(verify_delivery_header(&in, scheme), "X-GitHub-Delivery",
		   "request: no scheme: X-GitHub-Delivery for the log");

	in.hub_signature = GH_SIG;
	request(s, &in, both, &r, &scheme);
	ok(r.status == VERIFY_OK && scheme == SCHEME_GITHUB, "request: github scheme chosen");
	is_str(verify_delivery_header(&in, scheme), "X-GitHub-Delivery",
		   "request: github delivery id in X-GitHub-Delivery");

	in.webhook_signature = "";
	in.webhook_id = "";
	request(s, &in, both, &r, &scheme);
	ok(r.status == VERIFY_OK && scheme == SCHEME_GITHUB,
	   "request: empty webhook-signature header counts as absent");
	in.webhook_signature = NULL;
	in.webhook_id = NULL;

	in.hub_signature = "";
	request(s, &in, both, &r, &scheme);
	is_int(r.status, VERIFY_MISSING, "request: empty X-Hub-Signature-256 counts as absent");

	in.hub_signature = "sha256=00";
	request(s, &in, both, &r, &scheme);
	ok(r.status == VERIFY_MALFORMED && strstr(r.message, "X-Hub-Signature-256"),
	   "request: malformed github header named");
	ok(strstr(r.message, "sha256=00") == NULL, "request: signature not echoed");

	/* --schemes standard: the published GitHub vector no longer gets in */
	in.hub_signature = GH_SIG;
	request(s, &in, SCHEMES_STANDARD, &r, &scheme);
	ok(r.status == VERIFY_SCHEME && scheme == SCHEME_NONE,
	   "request: github refused when only standard is accepted");
	ok(strstr(r.message, "github") && strstr(r.message, "not accepted") &&
		   strstr(r.message, "accepted: standard (webhook-id, webhook-timestamp, "
							 "webhook-signature)") &&
		   !strstr(r.message, "or github"),
	   "request: the 401 names the refused scheme and the accepted one (%s)", r.message);
	is_str(verify_delivery_header(&in, scheme), "X-GitHub-Delivery",
		   "request: a refused github request is logged with X-GitHub-Delivery");
	in.hub_signature = NULL;
	request(s, &in, SCHEMES_STANDARD, &r, &scheme);
	ok(r.status == VERIFY_MISSING && strstr(r.message, "webhook-signature") &&
		   !strstr(r.message, "X-Hub-Signature-256"),
	   "request: missing names only the accepted scheme (%s)", r.message);

	s = load(SW_KEY);
	in.body = (const unsigned char *) SW_BODY;
	in.body_len = strlen(SW_BODY);
	in.webhook_signature = SW_SIG;
	in.webhook_timestamp = SW_TS;
	request(s, &in, both, &r, &scheme);
	ok(r.status == VERIFY_MALFORMED && strstr(r.message, "webhook-id"),
	   "request: missing webhook-id named");
	in.webhook_id = SW_ID;
	in.webhook_timestamp = NULL;
	request(s, &in, both, &r, &scheme);
	ok(r.status == VERIFY_MALFORMED && strstr(r.message, "webhook-timestamp"),
	   "request: missing webhook-timestamp named");
	in.webhook_timestamp = SW_TS;
	request(s, &in, both, &r, &scheme);
	ok(r.status == VERIFY_OK && scheme == SCHEME_STANDARD, "request: standard scheme chosen");
	is_str(verify_delivery_header(&in, scheme), "webhook-id",
		   "request: standard delivery id in webhook-id");
	in.now = SW_NOW + 301;
	request(s, &in, both, &r, &scheme);
	ok(r.status == VERIFY_TIMESTAMP && strstr(r.message, "300"),
	   "request: tolerance named in the message");
	in.now = SW_NOW;

	/* the published Standard Webhooks vector under --schemes github */
	request(s, &in, SCHEMES_GITHUB, &r, &scheme);
	ok(r.status == VERIFY_SCHEME && scheme == SCHEME_NONE &&
		   strstr(r.message, "standard (webhook-signature) is not accepted") &&
		   strstr(r.message, "accepted: github (X-Hub-Signature-256)"),
	   "request: standard refused when only github is accepted (%s)", r.message);
	is_str(verify_delivery_header(&in, scheme), "webhook-id",
		   "request: a refused standard request is logged with webhook-id");

	/* both headers: the accepted one is used, standard first */
	in.hub_signature = "sha256=00";
	request(s, &in, both, &r, &scheme);
	ok(r.status == VERIFY_OK && scheme == SCHEME_STANDARD,
	   "request: both headers, both accepted: standard wins");
	request(s, &in, SCHEMES_GITHUB, &r, &scheme);
	ok(scheme == SCHEME_GITHUB && r.status == VERIFY_MALFORMED,
	   "request: both headers, only github accepted: github is verified");
}

/*
 * Stripe vectors, computed with openssl (the key is the secret text exactly
 * as given, whsec_ included, not decoded):
 *
 *   printf '%s' '1700000000.{"id":"evt_1Q2w3E4r","object":"event","type":"checkout.session.completed"}' |
 *     openssl dgst -sha256 -hmac 'whsec_5c0Vq1fV9q8Xh7TQ3mLhUo2YpK4rW6sZ'
 *
 * and the same with -hmac 'whsec_rolled0new0secret0ZmFrZQ' for ST_V1_NEW.
 */
#define ST_SECRET "whsec_5c0Vq1fV9q8Xh7TQ3mLhUo2YpK4rW6sZ"
#define ST_NEW    "whsec_rolled0new0secret0ZmFrZQ"
#define ST_BODY                                                                                    \
	"{\"id\":\"evt_1Q2w3E4r\",\"object\":\"event\",\"type\":\"checkout.session.completed\"}"
#define ST_T       "1700000000"
#define ST_NOW     1700000000
#define ST_V1      "4b63bf4b2dba5dc7e65b71a870cd70d2c133a56b9c82d6bd65f786a0dc9e9813"
#define ST_V1_NEW  "f950145ed34e7a0b699e9533100031aab432b2aa3fd2007fa697b82e472497ca"
#define ST_V1_ZERO "0000000000000000000000000000000000000000000000000000000000000000"

static struct secrets *
load_stripe(const char *text)
{
	static struct secrets s;
	char                  err[200];

	if (!secrets_parse(text, strlen(text), SECRET_FORM_EXACT, &s, err, sizeof err))
	{
		printf("# secrets_parse failed: %s\n", err);
		s.count = 0;
	}
	return &s;
}

static enum verify_status
st(const struct secrets *s, const char *header, const char *body, int64_t now)
{
	const char *problem;

	return verify_stripe(s, header, (const unsigned char *) body, strlen(body), now, 300, &problem);
}

/* The header parses; or it is refused with a problem containing needle. */
static void
parses(const char *header, int nv1, const char *what)
{
	struct stripe_signature sig;
	const char             *problem = stripe_parse_signature(header, &sig);

	ok(problem == NULL && sig.nv1 == nv1 && sig.t == ST_NOW && sig.timestamp_len == 10 &&
		   memcmp(sig.timestamp, ST_T, 10) == 0,
	   "stripe header: %s parses with %d v1 (%s)", what, nv1, problem ? problem : "ok");
}

static void
refused_header(const char *header, const char *needle, const char *what)
{
	struct stripe_signature sig;
	const char             *problem = stripe_parse_signature(header, &sig);

	ok(problem != NULL && strstr(problem, needle) != NULL &&
		   strstr(problem, "Stripe-Signature") != NULL,
	   "stripe header: %s refused: %s", what, problem ? problem : "(parsed)");
}

static void
test_stripe_header(void)
{
	struct stripe_signature sig;
	char                    big[STRIPE_HEADER_MAX + 2];
	char                    many[1024];

	parses("t=" ST_T ",v1=" ST_V1, 1, "t and one v1");
	ok(stripe_parse_signature("t=" ST_T ",v1=" ST_V1, &sig) == NULL && sig.v1[0][0] == 0x4b &&
		   sig.v1[0][31] == 0x13,
	   "stripe header: v1 decoded to bytes");
	parses("t=" ST_T ",v1=" ST_V1 ",v1=" ST_V1_NEW, 2, "two v1 (a rolled secret)");
	parses("t=" ST_T ",v1=" ST_V1 ",v0=" ST_V1_ZERO, 1, "v1 then v0");
	parses("t=" ST_T
		   ",v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39,v1=" ST_V1,
		   1, "v0 before v1");
	parses("t=" ST_T ",v2=anything,v1=" ST_V1, 1, "an unknown scheme skipped");
	parses("t=" ST_T ",v1=4B63BF4B2DBA5DC7E65B71A870CD70D2C133A56B9C82D6BD65F786A0DC9E9813", 1,
		   "upper-case hex");

	refused_header(NULL, "missing", "absent");
	refused_header("", "missing", "empty");
	refused_header("t=" ST_T ",v0=" ST_V1_ZERO, "no v1", "v0 only");
	refused_header("t=" ST_T, "no v1", "t only");
	refused_header("v1=" ST_V1 ",t=" ST_T, "t= once, first", "v1 before t");
	refused_header("v1=" ST_V1, "t= once, first", "t missing");
	refused_header("t=" ST_T ",t=" ST_T ",v1=" ST_V1, "t= once, first", "t twice");
	refused_header("t=17000000x0,v1=" ST_V1, "Unix seconds", "non-numeric t");
	refused_header("t=-1700000000,v1=" ST_V1, "Unix seconds", "negative t");
	refused_header("t=,v1=" ST_V1, "Unix seconds", "empty t");
	refused_header("t=1700000000000000000000,v1=" ST_V1, "Unix seconds", "t beyond 64 bits");
	refused_header("t=" ST_T ", v1=" ST_V1, "without spaces", "a space after the comma");
	refused_header("t=" ST_T ",v1=" ST_V1 " ", "without spaces", "a trailing space");
	refused_header("t=" ST_T "\t,v1=" ST_V1, "without spaces", "a tab");
	refused_header("t=" ST_T ",,v1=" ST_V1, "key=value", "an empty element");
	refused_header("t=" ST_T ",v1=" ST_V1 ",", "key=value", "a trailing comma");
	refused_header(",t=" ST_T ",v1=" ST_V1, "key=value", "a leading comma");
	refused_header("t=" ST_T ",v1", "key=value", "v1 without =");
	refused_header("t=" ST_T ",=" ST_V1, "key=value", "an empty key");
	refused_header("t=" ST_T ",v1=" ST_V1 "0", "64 hex digits", "65 hex digits");
	refused_header("t=" ST_T ",v1=4b63", "64 hex digits", "a short v1");
	refused_header("t=" ST_T ",v1=zz63bf4b2dba5dc7e65b71a870cd70d2c133a56b9c82d6bd65f786a0dc9e9813",
				   "64 hex digits", "non-hex v1");
	refused_header("t=" ST_T ",v1=" ST_V1 ",v1=bad", "64 hex digits",
				   "a good v1 does not excuse a bad one");

	strcpy(many, "t=" ST_T);
	for (int i = 0; i < STRIPE_V1_MAX; i++)
		strcat(many, ",v1=" ST_V1);
	parses(many, STRIPE_V1_MAX, "eight v1");
	strcat(many, ",v1=" ST_V1);
	refused_header(many, "more than 8", "nine v1");

	memset(big, 'a', sizeof big);
	memcpy(big, "t=" ST_T ",v1=" ST_V1 ",v0=", strlen("t=" ST_T ",v1=" ST_V1 ",v0="));
	big[STRIPE_HEADER_MAX] = '\0';
	parses(big, 1, "exactly 1024 bytes");
	big[STRIPE_HEADER_MAX] = 'a';
	big[STRIPE_HEADER_MAX + 1] = '\0';
	refused_header(big, "longer than 1024 bytes", "1025 bytes");
}

static void
test_stripe(void)
{
	struct secrets      *s = load_stripe(ST_SECRET);
	const char          *problem;
	struct verify_input  in = {0};
	struct verify_result r;

	is_int(s->items[0].len, strlen(ST_SECRET), "stripe: the secret is keyed as given");
	is_int(st(s, "t=" ST_T ",v1=" ST_V1, ST_BODY, ST_NOW), VERIFY_OK,
		   "stripe: the vector verifies");
	is_int(st(s, "t=" ST_T ",v1=" ST_V1_ZERO ",v1=" ST_V1, ST_BODY, ST_NOW), VERIFY_OK,
		   "stripe: any v1 may match");
	is_int(st(s, "t=" ST_T ",v0=" ST_V1 ",v1=" ST_V1_ZERO, ST_BODY, ST_NOW), VERIFY_MISMATCH,
		   "stripe: a v0 holding the right MAC does not count");
	is_int(st(s, "t=" ST_T ",v1=" ST_V1, ST_BODY " ", ST_NOW), VERIFY_MISMATCH,
		   "stripe: another body refused");
	is_int(st(s, "t=1700000001,v1=" ST_V1, ST_BODY, ST_NOW), VERIFY_MISMATCH,
		   "stripe: the timestamp is signed");
	is_int(st(s, "t=01700000000,v1=" ST_V1, ST_BODY, ST_NOW), VERIFY_MISMATCH,
		   "stripe: the timestamp is signed as the text sent");
	is_int(st(s, "t=" ST_T ",v0=" ST_V1, ST_BODY, ST_NOW), VERIFY_MALFORMED,
		   "stripe: v0 only is malformed");
	is_int(st(s, NULL, ST_BODY, ST_NOW), VERIFY_MISSING, "stripe: no header");

	/* the key is the text as given: the decoded whsec_ bytes are another key */
	is_int(
		st(load("whsec_5c0Vq1fV9q8Xh7TQ3mLhUo2YpK4rW6sZ"), "t=" ST_T ",v1=" ST_V1, ST_BODY, ST_NOW),
		VERIFY_MISMATCH, "stripe: the whsec_-decoded key does not verify");
	s = load_stripe(ST_SECRET);

	/* tolerance: exactly 300 s either way accepted, 301 refused */
	is_int(st(s, "t=" ST_T ",v1=" ST_V1, ST_BODY, ST_NOW + 300), VERIFY_OK,
		   "stripe tolerance: 300 s old accepted");
	is_int(st(s, "t=" ST_T ",v1=" ST_V1, ST_BODY, ST_NOW - 300), VERIFY_OK,
		   "stripe tolerance: 300 s ahead accepted");
	is_int(st(s, "t=" ST_T ",v1=" ST_V1, ST_BODY, ST_NOW + 301), VERIFY_TIMESTAMP,
		   "stripe tolerance: 301 s old refused");
	is_int(st(s, "t=" ST_T ",v1=" ST_V1, ST_BODY, ST_NOW - 301), VERIFY_TIMESTAMP,
		   "stripe tolerance: 301 s ahead refused");
	is_int(verify_stripe(s, "t=" ST_T ",v1=" ST_V1, (const unsigned char *) ST_BODY,
						 strlen(ST_BODY), ST_NOW + 1, 0, &problem),
		   VERIFY_TIMESTAMP, "stripe tolerance: zero refuses a second off");
	is_int(st(s, "t=" ST_T ",v1=" ST_V1_ZERO, ST_BODY, ST_NOW + 301), VERIFY_TIMESTAMP,
		   "stripe tolerance: the timestamp is checked before the MAC");

	/* rotation: Stripe's rolled secret signs with both for a while */
	s = load_stripe(ST_SECRET "\n" ST_NEW "\n");
	is_int(s->count, 2, "stripe rotation: two secrets");
	is_int(st(s, "t=" ST_T ",v1=" ST_V1_NEW, ST_BODY, ST_NOW), VERIFY_OK,
		   "stripe rotation: the new secret verifies");
	is_int(st(s, "t=" ST_T ",v1=" ST_V1, ST_BODY, ST_NOW), VERIFY_OK,
		   "stripe rotation: the old one too");
	is_int(st(load_stripe(ST_NEW), "t=" ST_T ",v1=" ST_V1, ST_BODY, ST_NOW), VERIFY_MISMATCH,
		   "stripe rotation: once removed the old one no longer verifies");
	is_int(st(load_stripe(ST_NEW), "t=" ST_T ",v1=" ST_V1 ",v1=" ST_V1_NEW, ST_BODY, ST_NOW),
		   VERIFY_OK, "stripe rotation: a header with both v1 verifies with either");

	/* through verify_request, as the HTTP side calls it */
	s = load_stripe(ST_SECRET);
	in.stripe_signature = "t=" ST_T ",v1=" ST_V1;
	in.hub_signature = GH_SIG;
	in.body = (const unsigned char *) ST_BODY;
	in.body_len = strlen(ST_BODY);
	in.now = ST_NOW + 301;
	in.tolerance = 300;
	verify_request(s, &in, SCHEME_STRIPE, 0, &r);
	ok(r.status == VERIFY_TIMESTAMP && strstr(r.message, "Stripe-Signature") &&
		   strstr(r.message, "300 seconds"),
	   "stripe request: tolerance named (%s)", r.message);
	in.now = ST_NOW;
	verify_request(s, &in, SCHEME_STRIPE, 0, &r);
	ok(r.status == VERIFY_OK && r.message[0] == '\0', "stripe request: verifies");
	is_str(verify_delivery_header(&in, SCHEME_STRIPE), NULL,
		   "stripe request: no delivery header (the event id is in the body)");
	in.stripe_signature = "t=" ST_T ",v1=" ST_V1_ZERO;
	verify_request(s, &in, SCHEME_STRIPE, 0, &r);
	ok(r.status == VERIFY_MISMATCH && strstr(r.message, "does not match") &&
		   !strstr(r.message, ST_V1_ZERO),
	   "stripe request: mismatch named, signature not echoed (%s)", r.message);
	in.stripe_signature = NULL;
	verify_request(s, &in, SCHEME_STRIPE, 0, &r);
	ok(r.status == VERIFY_MISSING && strstr(r.message, "missing header Stripe-Signature"),
	   "stripe request: X-Hub-Signature-256 does not stand in for Stripe-Signature (%s)",
	   r.message);
}

int
main(void)
{
	test_github();
	test_standard();
	test_tolerance();
	test_rotation();
	test_secrets_parse();
	test_base64();
	test_request();
	test_stripe_header();
	test_stripe();
	return done_testing();
}
