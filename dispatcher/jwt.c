/*
 * jwt.c - RS256 JSON Web Tokens with OpenSSL's EVP interface.
 */
#include "jwt.h"

#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char JWT_HEADER[] = "{\"alg\":\"RS256\",\"typ\":\"JWT\"}";

bool
jwt_claims(const char *app_id, time_t now, char *buf, size_t len)
{
	bool numeric = app_id[0] != '\0' && app_id[strspn(app_id, "0123456789")] == '\0';
	int  n;

	/* the id has passed config's check: digits, letters and dots only */
	n = snprintf(buf, len,
				 numeric ? "{\"iat\":%lld,\"exp\":%lld,\"iss\":%s}"
						 : "{\"iat\":%lld,\"exp\":%lld,\"iss\":\"%s\"}",
				 (long long) now - JWT_IAT_BACK_S,
				 (long long) now - JWT_IAT_BACK_S + JWT_LIFETIME_S, app_id);
	return n > 0 && (size_t) n < len;
}

bool
jwt_base64url(const unsigned char *in, size_t len, char *out, size_t outlen)
{
	size_t need = 4 * ((len + 2) / 3) + 1;
	int    n;

	if (outlen < need || len > (size_t) 0x3fffffff)
		return false;
	n = EVP_EncodeBlock((unsigned char *) out, in, (int) len);
	while (n > 0 && out[n - 1] == '=')
		n--;
	out[n] = '\0';
	for (int i = 0; i < n; i++)
		if (out[i] == '+')
			out[i] = '-';
		else if (out[i] == '/')
			out[i] = '_';
	return true;
}

/* base64url of a NUL-terminated string, malloc'd. */
static char *
encode_text(const char *text)
{
	size_t len = strlen(text);
	size_t cap = 4 * ((len + 2) / 3) + 1;
	char  *out = malloc(cap);

	if (out != NULL && !jwt_base64url((const unsigned char *) text, len, out, cap))
	{
		free(out);
		out = NULL;
	}
	return out;
}

char *
jwt_sign(EVP_PKEY *key, const char *claims, char *err, size_t errlen)
{
	EVP_MD_CTX    *ctx = NULL;
	char          *header = encode_text(JWT_HEADER);
	char          *payload = encode_text(claims);
	char          *input = NULL;
	unsigned char *sig = NULL;
	size_t         siglen = 0;
	char          *token = NULL;
	size_t         inlen;

	if (header == NULL || payload == NULL)
	{
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	inlen = strlen(header) + 1 + strlen(payload);
	input = malloc(inlen + 1);
	if (input == NULL)
	{
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	snprintf(input, inlen + 1, "%s.%s", header, payload);

	ctx = EVP_MD_CTX_new();
	if (ctx == NULL || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1 ||
		EVP_DigestSign(ctx, NULL, &siglen, (const unsigned char *) input, inlen) != 1 ||
		(sig = malloc(siglen)) == NULL ||
		EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *) input, inlen) != 1)
	{
		unsigned long e = ERR_get_error();
		const char   *why = e != 0 ? ERR_reason_error_string(e) : NULL;

		snprintf(err, errlen, "cannot sign the App JWT: %s", why != NULL ? why : "out of memory");
		ERR_clear_error();
		goto done;
	}
	{
		size_t cap = inlen + 1 + 4 * ((siglen + 2) / 3) + 1;

		token = malloc(cap);
		if (token == NULL)
		{
			snprintf(err, errlen, "out of memory");
			goto done;
		}
		memcpy(token, input, inlen);
		token[inlen] = '.';
		jwt_base64url(sig, siglen, token + inlen + 1, cap - inlen - 1);
	}

done:
	EVP_MD_CTX_free(ctx);
	free(header);
	free(payload);
	free(input);
	free(sig);
	return token;
}
