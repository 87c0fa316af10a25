/*
 * verify.c - webhook secrets and signature verification.
 *
 * Every scheme is HMAC-SHA256: the two callback schemes keyed with the same
 * secret bytes, Stripe's with its own secrets.  Computed MACs are compared
 * with CRYPTO_memcmp so the time taken does not reveal how many leading
 * bytes of a forged signature were right.
 */
#include "verify.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <string.h>

#define MAC_LEN       32
#define MAC_B64_LEN   44 /* base64 of 32 bytes, with one '=' */
#define GITHUB_PREFIX "sha256="
#define WHSEC_PREFIX  "whsec_"

struct chunk
{
	const void *data;
	size_t      len;
};

static bool
hmac_sha256(const struct secret *key, const struct chunk *chunks, int nchunks,
			unsigned char out[MAC_LEN])
{
	EVP_MAC     *mac;
	EVP_MAC_CTX *ctx = NULL;
	OSSL_PARAM   params[2];
	size_t       outlen = 0;
	bool         ok = false;

	mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (mac == NULL)
		return false;
	ctx = EVP_MAC_CTX_new(mac);
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *) "SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	if (ctx == NULL || !EVP_MAC_init(ctx, key->key, key->len, params))
		goto done;
	for (int i = 0; i < nchunks; i++)
		if (!EVP_MAC_update(ctx, chunks[i].data, chunks[i].len))
			goto done;
	ok = EVP_MAC_final(ctx, out, &outlen, MAC_LEN) && outlen == MAC_LEN;
done:
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(mac);
	return ok;
}

static bool
is_base64_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
		   c == '/';
}

bool
base64_decode(const char *in, size_t inlen, unsigned char *out, size_t outcap, size_t *outlen)
{
	size_t        pad = 0;
	unsigned char tmp[SECRET_MAX_BYTES + 3];
	int           n;

	if (inlen == 0 || inlen % 4 != 0)
		return false;
	if (in[inlen - 1] == '=')
		pad = (in[inlen - 2] == '=') ? 2 : 1;
	for (size_t i = 0; i < inlen - pad; i++)
		if (!is_base64_char((unsigned char) in[i]))
			return false;
	/* EVP_DecodeBlock counts padding as zero bytes; the real length is less */
	if (inlen / 4 * 3 > sizeof tmp || inlen / 4 * 3 - pad > outcap)
		return false;
	n = EVP_DecodeBlock(tmp, (const unsigned char *) in, (int) inlen);
	if (n < 0 || (size_t) n != inlen / 4 * 3)
		return false;
	*outlen = (size_t) n - pad;
	memcpy(out, tmp, *outlen);
	OPENSSL_cleanse(tmp, sizeof tmp);
	return true;
}

/* isspace() in the C locale, without depending on the locale. */
static bool
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/*
 * Whitespace around a secret is refused rather than trimmed: it is nearly
 * always an accident of an editor or a shell, and trimming it here while a
 * sender keeps it (or the other way round) would make the two disagree
 * about the key with nothing but 401s to show for it.
 */
bool
secrets_parse(const char *text, size_t len, enum secret_form form, struct secrets *out, char *err,
			  size_t errlen)
{
	size_t pos = 0;
	int    lineno = 0;

	memset(out, 0, sizeof *out);
	while (pos < len)
	{
		const char    *line = text + pos;
		const char    *nl = memchr(line, '\n', len - pos);
		size_t         linelen = nl ? (size_t) (nl - line) : len - pos;
		struct secret *s;
		bool           whsec;
		size_t         spaces = 0;

		pos += linelen + (nl ? 1 : 0);
		lineno++;
		if (linelen > 0 && line[linelen - 1] == '\r')
			linelen--;
		if (linelen == 0)
			continue;
		while (spaces < linelen && is_space(line[spaces]))
			spaces++;
		if (spaces == linelen)
		{
			snprintf(err, errlen, "line %d holds only whitespace (leave it empty or remove it)",
					 lineno);
			goto fail;
		}
		if (spaces > 0 || is_space(line[linelen - 1]))
		{
			snprintf(err, errlen, "secret on line %d starts or ends with whitespace", lineno);
			goto fail;
		}
		if (out->count == SECRETS_MAX)
		{
			snprintf(err, errlen, "too many secrets: at most %d are accepted", SECRETS_MAX);
			goto fail;
		}
		s = &out->items[out->count];
		whsec = form == SECRET_FORM_WEBHOOK && linelen >= strlen(WHSEC_PREFIX) &&
				memcmp(line, WHSEC_PREFIX, strlen(WHSEC_PREFIX)) == 0;
		if (whsec)
		{
			const char *b64 = line + strlen(WHSEC_PREFIX);
			size_t      b64len = linelen - strlen(WHSEC_PREFIX);

			if (!base64_decode(b64, b64len, s->key, sizeof s->key, &s->len))
			{
				snprintf(err, errlen,
						 "secret on line %d starts with whsec_ but the rest is not valid base64",
						 lineno);
				goto fail;
			}
		}
		else
		{
			if (linelen > sizeof s->key)
			{
				snprintf(err, errlen, "secret on line %d is longer than %d bytes", lineno,
						 SECRET_MAX_BYTES);
				goto fail;
			}
			memcpy(s->key, line, linelen);
			s->len = linelen;
		}
		if (s->len < SECRET_MIN_BYTES)
		{
			snprintf(err, errlen, "secret on line %d is shorter than %d bytes%s", lineno,
					 SECRET_MIN_BYTES, whsec ? " after base64 decoding" : "");
			goto fail;
		}
		out->count++;
	}
	if (out->count == 0)
	{
		snprintf(err, errlen, "no secret found (one secret per line expected)");
		return false;
	}
	return true;
fail:
	secrets_clear(out);
	return false;
}

void
secrets_clear(struct secrets *secrets)
{
	OPENSSL_cleanse(secrets, sizeof *secrets);
}

static int
hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Exactly 64 hex digits into 32 bytes. */
static bool
decode_hex_mac(const char *hex, size_t len, unsigned char out[MAC_LEN])
{
	if (len != 2 * MAC_LEN)
		return false;
	for (int i = 0; i < MAC_LEN; i++)
	{
		int hi = hex_value((unsigned char) hex[2 * i]);
		int lo = hex_value((unsigned char) hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return false;
		out[i] = (unsigned char) (hi << 4 | lo);
	}
	return true;
}

/*
 * GitHub sends lowercase hex; uppercase is accepted too, because hex case
 * carries no information and refusing it would only reject honest senders.
 */
enum verify_status
verify_github(const struct secrets *secrets, const char *header, const unsigned char *body,
			  size_t body_len)
{
	unsigned char expected[MAC_LEN];
	unsigned char mac[MAC_LEN];
	const char   *hex;
	struct chunk  chunk = {body, body_len};

	if (header == NULL)
		return VERIFY_MISSING;
	if (strncmp(header, GITHUB_PREFIX, strlen(GITHUB_PREFIX)) != 0)
		return VERIFY_MALFORMED;
	hex = header + strlen(GITHUB_PREFIX);
	if (!decode_hex_mac(hex, strlen(hex), expected))
		return VERIFY_MALFORMED;

	for (int i = 0; i < secrets->count; i++)
	{
		if (!hmac_sha256(&secrets->items[i], &chunk, 1, mac))
			return VERIFY_INTERNAL;
		if (CRYPTO_memcmp(mac, expected, MAC_LEN) == 0)
			return VERIFY_OK;
	}
	return VERIFY_MISMATCH;
}

/* Unix seconds: digits only, no sign, no overflow. */
static bool
parse_timestamp(const char *text, int64_t *out)
{
	int64_t v = 0;

	if (text == NULL || *text == '\0' || strlen(text) > 18)
		return false;
	for (const char *p = text; *p; p++)
	{
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (*p - '0');
	}
	*out = v;
	return true;
}

enum verify_status
verify_standard(const struct secrets *secrets, const char *id, const char *timestamp,
				const char *signature, const unsigned char *body, size_t body_len, int64_t now,
				int64_t tolerance)
{
	int64_t       ts;
	unsigned char macs[SECRETS_MAX][MAC_B64_LEN + 1];
	bool          have_v1 = false;
	const char   *p;

	if (signature == NULL)
		return VERIFY_MISSING;
	if (id == NULL || *id == '\0' || !parse_timestamp(timestamp, &ts))
		return VERIFY_MALFORMED;
	if (ts < now - tolerance || ts > now + tolerance)
		return VERIFY_TIMESTAMP;

	for (int i = 0; i < secrets->count; i++)
	{
		unsigned char mac[MAC_LEN];
		struct chunk  chunks[] = {
			 {id, strlen(id)}, {".", 1}, {timestamp, strlen(timestamp)}, {".", 1}, {body, body_len}};

		if (!hmac_sha256(&secrets->items[i], chunks, 5, mac))
			return VERIFY_INTERNAL;
		if (EVP_EncodeBlock(macs[i], mac, MAC_LEN) != MAC_B64_LEN)
			return VERIFY_INTERNAL;
	}

	/* entries are "version,base64" separated by single spaces */
	p = signature;
	while (*p)
	{
		const char *end = strchr(p, ' ');
		size_t      len = end ? (size_t) (end - p) : strlen(p);

		if (len > 3 && memcmp(p, "v1,", 3) == 0)
		{
			have_v1 = true;
			if (len - 3 == MAC_B64_LEN)
				for (int i = 0; i < secrets->count; i++)
					if (CRYPTO_memcmp(macs[i], p + 3, MAC_B64_LEN) == 0)
						return VERIFY_OK;
		}
		p += len;
		while (*p == ' ')
			p++;
	}
	return have_v1 ? VERIFY_MISMATCH : VERIFY_MALFORMED;
}

const char *
stripe_parse_signature(const char *header, struct stripe_signature *out)
{
	const char *p = header;
	bool        first = true;
	size_t      len;

	memset(out, 0, sizeof *out);
	if (header == NULL || header[0] == '\0')
		return "missing header Stripe-Signature";
	len = strlen(header);
	if (len > STRIPE_HEADER_MAX)
		return "header Stripe-Signature is longer than 1024 bytes";
	for (size_t i = 0; i < len; i++)
		if ((unsigned char) header[i] <= ' ' || (unsigned char) header[i] >= 0x7f)
			return "header Stripe-Signature must be t=<unix seconds>,v1=<64 hex digits> "
				   "without spaces";

	for (;;)
	{
		size_t      elen = strcspn(p, ",");
		const char *eq = memchr(p, '=', elen);
		size_t      klen = eq ? (size_t) (eq - p) : 0;
		const char *value = eq ? eq + 1 : NULL;
		size_t      vlen = eq ? elen - klen - 1 : 0;

		if (eq == NULL || klen == 0)
			return "header Stripe-Signature must be comma-separated key=value elements";
		if (klen == 1 && p[0] == 't')
		{
			char digits[19];

			if (!first)
				return "header Stripe-Signature must hold t= once, first";
			if (vlen == 0 || vlen >= sizeof digits)
				return "header Stripe-Signature t= must be Unix seconds";
			memcpy(digits, value, vlen);
			digits[vlen] = '\0';
			if (!parse_timestamp(digits, &out->t))
				return "header Stripe-Signature t= must be Unix seconds";
			out->timestamp = value;
			out->timestamp_len = vlen;
		}
		else if (first)
			return "header Stripe-Signature must hold t= once, first";
		else if (klen == 2 && p[0] == 'v' && p[1] == '1')
		{
			if (out->nv1 == STRIPE_V1_MAX)
				return "header Stripe-Signature holds more than 8 v1 signatures";
			if (!decode_hex_mac(value, vlen, out->v1[out->nv1]))
				return "header Stripe-Signature v1= must be 64 hex digits";
			out->nv1++;
		}
		first = false;
		p += elen;
		if (*p == '\0')
			break;
		p++; /* the comma; a trailing one leaves an empty element */
	}
	if (out->nv1 == 0)
		return "header Stripe-Signature has no v1= signature";
	return NULL;
}

enum verify_status
verify_stripe(const struct secrets *secrets, const char *header, const unsigned char *body,
			  size_t body_len, int64_t now, int64_t tolerance, const char **problem)
{
	struct stripe_signature sig;

	*problem = stripe_parse_signature(header, &sig);
	if (*problem != NULL)
		return header == NULL || header[0] == '\0' ? VERIFY_MISSING : VERIFY_MALFORMED;
	if (sig.t < now - tolerance || sig.t > now + tolerance)
	{
		*problem = "header Stripe-Signature t= is outside the tolerance";
		return VERIFY_TIMESTAMP;
	}
	for (int i = 0; i < secrets->count; i++)
	{
		unsigned char mac[MAC_LEN];
		struct chunk  chunks[] = {{sig.timestamp, sig.timestamp_len}, {".", 1}, {body, body_len}};

		if (!hmac_sha256(&secrets->items[i], chunks, 3, mac))
		{
			*problem = "signature could not be verified";
			return VERIFY_INTERNAL;
		}
		for (int v = 0; v < sig.nv1; v++)
			if (CRYPTO_memcmp(mac, sig.v1[v], MAC_LEN) == 0)
				return VERIFY_OK;
	}
	*problem = "header Stripe-Signature does not match the request";
	return VERIFY_MISMATCH;
}

/*
 * An empty header is treated as absent: some clients send every header they
 * know of, empty when unused, and refusing a valid GitHub signature because
 * of an empty webhook-signature would only confuse.
 */
static bool
present(const char *header)
{
	return header != NULL && header[0] != '\0';
}

enum verify_scheme
verify_choose_scheme(const struct verify_input *in, unsigned int accepted)
{
	if ((accepted & SCHEMES_STANDARD) && present(in->webhook_signature))
		return SCHEME_STANDARD;
	if ((accepted & SCHEMES_GITHUB) && present(in->hub_signature))
		return SCHEME_GITHUB;
	return SCHEME_NONE;
}

const char *
verify_delivery_header(const struct verify_input *in, enum verify_scheme scheme)
{
	switch (scheme)
	{
		case SCHEME_STANDARD:
			return "webhook-id";
		case SCHEME_GITHUB:
			return "X-GitHub-Delivery";
		case SCHEME_STRIPE:
			return NULL; /* the event id is in the body */
		case SCHEME_NONE:
			break;
	}
	return present(in->webhook_signature) ? "webhook-id" : "X-GitHub-Delivery";
}

/* What a sender must send to be accepted, in the words of --schemes. */
static const char *
accepted_headers(unsigned int accepted)
{
	if ((accepted & SCHEMES_STANDARD) && (accepted & SCHEMES_GITHUB))
		return "standard (webhook-id, webhook-timestamp, webhook-signature) or github "
			   "(X-Hub-Signature-256)";
	if (accepted & SCHEMES_STANDARD)
		return "standard (webhook-id, webhook-timestamp, webhook-signature)";
	return "github (X-Hub-Signature-256)";
}

static void
explain_standard(const struct verify_input *in, enum verify_status st, struct verify_result *result)
{
	int64_t ts;

	switch (st)
	{
		case VERIFY_OK:
			break;
		case VERIFY_MALFORMED:
			if (in->webhook_id == NULL || in->webhook_id[0] == '\0')
				snprintf(result->message, sizeof result->message,
						 "missing header webhook-id (required with webhook-signature)");
			else if (in->webhook_timestamp == NULL)
				snprintf(result->message, sizeof result->message,
						 "missing header webhook-timestamp (required with webhook-signature)");
			else if (!parse_timestamp(in->webhook_timestamp, &ts))
				snprintf(result->message, sizeof result->message,
						 "header webhook-timestamp must be Unix seconds");
			else
				snprintf(result->message, sizeof result->message,
						 "header webhook-signature has no v1,<base64> entry");
			break;
		case VERIFY_TIMESTAMP:
			snprintf(
				result->message, sizeof result->message,
				"header webhook-timestamp is more than %lld seconds away from the current time",
				(long long) in->tolerance);
			break;
		case VERIFY_MISMATCH:
			snprintf(result->message, sizeof result->message,
					 "header webhook-signature does not match the request");
			break;
		case VERIFY_MISSING:
		case VERIFY_SCHEME:
		case VERIFY_INTERNAL:
			snprintf(result->message, sizeof result->message, "signature could not be verified");
			break;
	}
}

static void
explain_github(enum verify_status st, struct verify_result *result)
{
	switch (st)
	{
		case VERIFY_OK:
			break;
		case VERIFY_MALFORMED:
			snprintf(result->message, sizeof result->message,
					 "header X-Hub-Signature-256 must be sha256= followed by 64 hex digits");
			break;
		case VERIFY_MISMATCH:
			snprintf(result->message, sizeof result->message,
					 "header X-Hub-Signature-256 does not match the body");
			break;
		case VERIFY_MISSING:
		case VERIFY_SCHEME:
		case VERIFY_TIMESTAMP:
		case VERIFY_INTERNAL:
			snprintf(result->message, sizeof result->message, "signature could not be verified");
			break;
	}
}

void
verify_request(const struct secrets *secrets, const struct verify_input *in,
			   enum verify_scheme scheme, unsigned int accepted, struct verify_result *result)
{
	memset(result, 0, sizeof *result);
	switch (scheme)
	{
		case SCHEME_STANDARD:
			result->status = verify_standard(secrets, in->webhook_id, in->webhook_timestamp,
											 in->webhook_signature, in->body, in->body_len, in->now,
											 in->tolerance);
			explain_standard(in, result->status, result);
			return;
		case SCHEME_GITHUB:
			result->status = verify_github(secrets, in->hub_signature, in->body, in->body_len);
			explain_github(result->status, result);
			return;
		case SCHEME_STRIPE:
		{
			const char *problem;

			result->status = verify_stripe(secrets, in->stripe_signature, in->body, in->body_len,
										   in->now, in->tolerance, &problem);
			if (result->status == VERIFY_TIMESTAMP)
				snprintf(result->message, sizeof result->message,
						 "header Stripe-Signature t= is more than %lld seconds away from the "
						 "current time",
						 (long long) in->tolerance);
			else if (result->status != VERIFY_OK)
				snprintf(result->message, sizeof result->message, "%s", problem);
			return;
		}
		case SCHEME_NONE:
			break;
	}
	if (present(in->webhook_signature) || present(in->hub_signature))
	{
		result->status = VERIFY_SCHEME;
		snprintf(result->message, sizeof result->message,
				 "signature scheme %s is not accepted here; accepted: %s",
				 present(in->webhook_signature) ? "standard (webhook-signature)"
												: "github (X-Hub-Signature-256)",
				 accepted_headers(accepted));
		return;
	}
	result->status = VERIFY_MISSING;
	snprintf(result->message, sizeof result->message, "missing signature: send %s",
			 accepted_headers(accepted));
}
