/*
 * fuzz_config.c - the secret file / PROVISION_WEBHOOK_SECRET parser (one
 * secret per line, whsec_ base64, rotation), the base64 decoder behind it,
 * the --listen and duration parsers, and config_parse over arguments and
 * environment.
 *
 * Input: one selector byte, then the text for that parser.  Properties: a
 * parse that succeeds yields 1..SECRETS_MAX keys of SECRET_MIN_BYTES..
 * SECRET_MAX_BYTES bytes, each from a line without surrounding whitespace
 * and equal to that line (raw) or to the line's base64 (whsec_), and every
 * key then verifies a signature made with it; a failed parse leaves no key
 * material behind.  config_parse either succeeds with values in range or
 * explains itself in one message that never contains a secret.
 */
#include "config.h"
#include "options.h"
#include "fuzz.h"
#include "verify.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/* The n-th non-empty line of text (after dropping one trailing \r). */
static bool
nth_secret_line(const char *text, size_t len, int n, const char **line, size_t *linelen)
{
	size_t pos = 0;

	while (pos < len)
	{
		const char *l = text + pos;
		const char *nl = memchr(l, '\n', len - pos);
		size_t      ll = nl ? (size_t) (nl - l) : len - pos;

		pos += ll + (nl ? 1 : 0);
		if (ll > 0 && l[ll - 1] == '\r')
			ll--;
		if (ll == 0)
			continue;
		if (n-- == 0)
		{
			*line = l;
			*linelen = ll;
			return true;
		}
	}
	return false;
}

static void
check_secrets(const char *text, size_t len)
{
	struct secrets             s;
	char                       err[200];
	static const unsigned char body[] = "{\"job_id\":\"j\"}";

	memset(err, 0, sizeof err);
	if (!secrets_parse(text, len, SECRET_FORM_WEBHOOK, &s, err, sizeof err))
	{
		static const struct secrets zero;

		fuzz_check(err[0] != '\0' && memchr(err, '\0', sizeof err) != NULL);
		fuzz_check(memcmp(&s, &zero, sizeof s) == 0);
		return;
	}
	fuzz_check(s.count >= 1 && s.count <= SECRETS_MAX);
	for (int i = 0; i < s.count; i++)
	{
		const char   *line;
		size_t        ll;
		unsigned char mac[EVP_MAX_MD_SIZE];
		unsigned int  maclen = 0;
		char          header[72];

		fuzz_check(s.items[i].len >= SECRET_MIN_BYTES && s.items[i].len <= SECRET_MAX_BYTES);
		fuzz_check(nth_secret_line(text, len, i, &line, &ll));
		fuzz_check(!isspace((unsigned char) line[0]) && !isspace((unsigned char) line[ll - 1]));
		if (ll >= 6 && memcmp(line, "whsec_", 6) == 0)
		{
			unsigned char decoded[SECRET_MAX_BYTES + 3];
			int    n = EVP_DecodeBlock(decoded, (const unsigned char *) line + 6, (int) (ll - 6));
			size_t pad = (line[ll - 1] == '=') + (line[ll - 2] == '=');

			fuzz_check(n >= 0 && (size_t) n - pad == s.items[i].len);
			fuzz_check(memcmp(decoded, s.items[i].key, s.items[i].len) == 0);
		}
		else
			fuzz_check(ll == s.items[i].len && memcmp(line, s.items[i].key, ll) == 0);

		fuzz_check(HMAC(EVP_sha256(), s.items[i].key, (int) s.items[i].len, body, sizeof body - 1,
						mac, &maclen) != NULL);
		memcpy(header, "sha256=", 7);
		for (int b = 0; b < 32; b++)
			snprintf(header + 7 + 2 * b, 3, "%02x", mac[b]);
		fuzz_check(verify_github(&s, header, body, sizeof body - 1) == VERIFY_OK);
	}
	secrets_clear(&s);
	fuzz_check(s.count == 0 && s.items[0].len == 0);
}

static void
check_base64(const char *text, size_t len, size_t cap)
{
	unsigned char out[SECRET_MAX_BYTES];
	size_t        outlen = (size_t) -1;

	if (base64_decode(text, len, out, cap, &outlen))
	{
		unsigned char again[SECRET_MAX_BYTES * 2];

		fuzz_check(outlen <= cap && outlen <= len / 4 * 3);
		/* canonical re-encoding decodes to the same bytes */
		fuzz_check(EVP_EncodeBlock(again, out, (int) outlen) == (int) (len));
	}
}

static void
check_listen(const char *value)
{
	char  host[256];
	char  port[8];
	char *end;
	long  p;

	memset(host, 'x', sizeof host);
	memset(port, 'x', sizeof port);
	if (!opt_parse_listen(value, host, sizeof host, port, sizeof port))
		return;
	fuzz_check(memchr(host, '\0', sizeof host) != NULL && host[0] != '\0');
	fuzz_check(memchr(port, '\0', sizeof port) != NULL);
	p = strtol(port, &end, 10);
	fuzz_check(*end == '\0' && p >= 1 && p <= 65535);
	fuzz_check(strstr(value, host) != NULL);
}

static void
check_duration(const char *value)
{
	long ms = -1;

	if (opt_parse_duration(value, &ms))
		fuzz_check(ms >= 0);
}

/*
 * A marker line put first in PROVISION_WEBHOOK_SECRET: whatever else the
 * input holds, no message may contain it (secrets never reach stderr).
 */
#define CANARY "canary-5ecret-9f3b2c7d1e"

static const char *const *fake_env;

static char *
lookup_env(const char *name)
{
	size_t n = strlen(name);

	for (const char *const *e = fake_env; *e; e++)
		if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
			return (char *) *e + n + 1;
	return NULL;
}

/*
 * text: one command-line argument or NAME=VALUE environment entry per line
 * (lines starting with "-" are arguments).  --secret-file is left out: it
 * opens whatever path it is given, which is I/O and not this target's.
 */
static void
check_config_parse(char *text)
{
	char              *argv[32] = {"provision-listener"};
	const char        *env[34];
	int                argc = 1;
	int                nenv = 0;
	char              *secret_env;
	char              *line;
	char              *save = NULL;
	struct config      cfg;
	char               err[512];
	enum config_result r;

	if (strstr(text, "secret-file") != NULL || strstr(text, CANARY) != NULL)
		return;
	secret_env = malloc(strlen(text) + 64);
	strcpy(secret_env, "PROVISION_WEBHOOK_SECRET=" CANARY "\n");
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
	{
		if (line[0] == '-' && argc < 31)
			argv[argc++] = line;
		else if (strncmp(line, "PROVISION_WEBHOOK_SECRET=", 25) == 0)
		{
			/* the rest of the input is the secret text, newlines included */
			strcat(secret_env, line + 25);
			if (save != NULL && *save != '\0')
			{
				strcat(secret_env, "\n");
				strcat(secret_env, save);
			}
			break;
		}
		else if (strchr(line, '=') != NULL && nenv < 32)
			env[nenv++] = line;
	}
	env[nenv++] = secret_env;
	env[nenv] = NULL;
	argv[argc] = NULL;
	fake_env = env;

	memset(err, 'x', sizeof err);
	r = config_parse(&cfg, argc, argv, lookup_env, err, sizeof err);
	fuzz_check(r == CONFIG_OK || r == CONFIG_HELP || r == CONFIG_VERSION || r == CONFIG_ERROR);
	fuzz_check(memchr(err, '\0', sizeof err) != NULL);
	fuzz_check(strstr(err, CANARY) == NULL);
	if (r == CONFIG_ERROR)
		fuzz_check(err[0] != '\0');
	if (r == CONFIG_OK)
	{
		char *end;
		long  port = strtol(cfg.listen_port, &end, 10);

		fuzz_check(cfg.secrets.count >= 1);
		fuzz_check(cfg.listen_host[0] != '\0' && *end == '\0' && port >= 1 && port <= 65535);
		fuzz_check(cfg.database != NULL);
		fuzz_check(cfg.max_body >= 1 && cfg.tolerance >= 0 && cfg.pool >= 1 && cfg.threads >= 1);
	}
	config_free(&cfg);
	free(secret_env);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char  *text;
	size_t len;

	if (size < 1)
		return 0;
	len = size - 1;
	/* an exact-size copy, NUL-terminated only for the string parsers */
	text = malloc(len + 1);
	memcpy(text, data + 1, len);
	text[len] = '\0';
	switch (data[0] % 5)
	{
		case 0:
			check_secrets(text, len);
			break;
		case 1:
			check_base64(text, len, data[0] / 5 * 3 % (SECRET_MAX_BYTES + 1));
			break;
		case 2:
			check_listen(text);
			break;
		case 3:
			check_duration(text);
			break;
		case 4:
			check_config_parse(text);
			break;
	}
	free(text);
	return 0;
}
