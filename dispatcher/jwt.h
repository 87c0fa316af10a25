/*
 * jwt.h - the JSON Web Token a GitHub App signs to ask for an installation
 * token: RS256 over base64url(header).base64url(claims).
 */
#ifndef PROVISION_JWT_H
#define PROVISION_JWT_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* GitHub's advice: iat a minute back against clock drift. */
#define JWT_IAT_BACK_S 60
/* GitHub refuses an exp more than ten minutes ahead; this is ten from iat. */
#define JWT_LIFETIME_S 600

/*
 * The claims for an App at time now, as JSON text in buf:
 * {"iat":now-60,"exp":now+540,"iss":ID}, with the id a JSON number when it
 * is all digits (an App id) and a string otherwise (a client id).  Returns
 * false if buf is too small.  Pure.
 */
bool jwt_claims(const char *app_id, time_t now, char *buf, size_t len);

/*
 * base64url without padding (RFC 7515 section 2) of len bytes into out,
 * which needs 4 * ceil(len / 3) + 1 bytes.  Returns false if it is too
 * small.  Pure.
 */
bool jwt_base64url(const unsigned char *in, size_t len, char *out, size_t outlen);

/*
 * The signed token "header.claims.signature" for the claims JSON, as a
 * malloc'd string; NULL with err set when signing fails.  No I/O.
 */
char *jwt_sign(EVP_PKEY *key, const char *claims, char *err, size_t errlen);

#endif
