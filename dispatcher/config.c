/*
 * config.c - the dispatcher's option table and the checks behind it.
 */
#include "config.h"

#include "options.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SECRET_FILE_MAX 65536
#define TOKEN_MAX       4096
#define APP_KEY_BITS    2048

static bool parse_repo(const struct opt_spec *, void *, const char *, bool, char *, size_t);
static bool parse_workflow(const struct opt_spec *, void *, const char *, bool, char *, size_t);
static bool parse_ref(const struct opt_spec *, void *, const char *, bool, char *, size_t);
static bool parse_token(const struct opt_spec *, void *, const char *, bool, char *, size_t);
static bool parse_app_id(const struct opt_spec *, void *, const char *, bool, char *, size_t);
static bool parse_app_key(const struct opt_spec *, void *, const char *, bool, char *, size_t);
static bool parse_digits(const struct opt_spec *, void *, const char *, bool, char *, size_t);
static bool parse_api(const struct opt_spec *, void *, const char *, bool, char *, size_t);
static bool parse_ca_file(const struct opt_spec *, void *, const char *, bool, char *, size_t);
static bool parse_metrics_listen(const struct opt_spec *, void *, const char *, bool, char *,
								 size_t);

#define F(field) offsetof(struct config, field)

static const struct opt_spec options[] = {
	{"database", "PROVISION_DATABASE_URL", "", "CONNINFO", opt_string, F(database), 0, 0,
	 "libpq connection string or URI (empty: PGHOST, PGPORT, ... as libpq does)"},
	{"repo", "PROVISION_GITHUB_REPO", NULL, "OWNER/NAME", parse_repo, F(repo), 0, 0,
	 "the repository whose workflow provisions the VMs (required)"},
	{"workflow", "PROVISION_GITHUB_WORKFLOW", "provision.yml", "FILE", parse_workflow, F(workflow),
	 0, 0, "the workflow's file name under .github/workflows, or its numeric id"},
	{"ref", "PROVISION_GITHUB_REF", "main", "REF", parse_ref, F(ref), 0, 0,
	 "the branch or tag the workflow runs from"},
	{"token-file", "PROVISION_GITHUB_TOKEN", NULL, "PATH", parse_token, 0, 0, 0,
	 "file holding the GitHub token (needs actions: write); the variable holds the token "
	 "itself"},
	{"app-id", "PROVISION_GITHUB_APP_ID", NULL, "ID", parse_app_id, F(app_id), 0, 0,
	 "GitHub App authentication: the App's id (or client id)"},
	{"app-key-file", "PROVISION_GITHUB_APP_KEY", NULL, "PATH", parse_app_key, 0, 0, 0,
	 "GitHub App authentication: file holding the App's private key (PEM); the variable "
	 "holds the PEM itself"},
	{"installation-id", "PROVISION_GITHUB_INSTALLATION_ID", NULL, "ID", parse_digits,
	 F(installation_id), 0, 0, "GitHub App authentication: the installation's id"},
	{"api", "PROVISION_GITHUB_API", "https://api.github.com", "URL", parse_api, F(api), 0, 0,
	 "GitHub's REST API (GitHub Enterprise Server: https://HOST/api/v3)"},
	{"ca-file", "PROVISION_CA_FILE", NULL, "PATH", parse_ca_file, F(ca_file), 0, 0,
	 "CA certificates (PEM) to verify the API's certificate with, instead of the system's"},
	{"batch", "PROVISION_BATCH", "10", "N", opt_long, F(batch), 1, 1000,
	 "jobs claimed at a time; a dispatcher holds at most this many"},
	{"poll", "PROVISION_POLL", "5", "SECONDS", opt_duration, F(poll_ms), 100, 3600L * 1000,
	 "time between polls; an enqueued notification wakes the dispatcher at once"},
	{"give-up", "PROVISION_GIVE_UP", "600", "SECONDS", opt_duration, F(give_up_ms), 0,
	 7L * 24 * 3600 * 1000,
	 "how long a job's dispatch may keep failing transiently (5xx, timeouts, network) before "
	 "the job is failed"},
	{"metrics-listen", "PROVISION_METRICS_LISTEN", NULL, "ADDR:PORT", parse_metrics_listen, 0, 0, 0,
	 "serve GET /healthz, /readyz and /metrics there (default: no HTTP server)"},
	{"log-format", "PROVISION_LOG_FORMAT", "text", "text|json", log_format_option, F(log_format), 0,
	 0, "stderr log lines as key=value text or one JSON object per line"},
	{"request-timeout", "PROVISION_REQUEST_TIMEOUT", "30s", "DURATION", opt_duration,
	 F(request_timeout_ms), 1000, 600L * 1000,
	 "longest GitHub API call, connecting included (then it counts as a transient failure)"},
	{"statement-timeout", "PROVISION_STATEMENT_TIMEOUT", "10s", "DURATION", opt_duration,
	 F(statement_timeout_ms), 100, 3600L * 1000, "statement_timeout of the database connection"},
	{"shutdown-timeout", "PROVISION_SHUTDOWN_TIMEOUT", "30s", "DURATION", opt_duration,
	 F(shutdown_timeout_ms), 0, 3600L * 1000,
	 "on SIGTERM/SIGINT, longest wait to record the answers of the calls made (the database "
	 "may be down); the rest is left to reconciliation"},
};

#define NOPTIONS ((int) (sizeof options / sizeof options[0]))

static bool
visible_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char) *s <= ' ' || (unsigned char) *s >= 0x7f)
			return false;
	return true;
}

static bool
all_of(const char *s, const char *allowed)
{
	return s[0] != '\0' && s[strspn(s, allowed)] == '\0';
}

#define DIGITS     "0123456789"
#define ALNUM      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" DIGITS
#define NAME_CHARS ALNUM "._-"

bool
config_valid_repo(const char *repo)
{
	const char *slash = strchr(repo, '/');
	char        owner[64];
	size_t      olen;
	const char *name;

	if (slash == NULL)
		return false;
	olen = (size_t) (slash - repo);
	name = slash + 1;
	if (olen == 0 || olen > 39 || strlen(name) > 100)
		return false;
	memcpy(owner, repo, olen);
	owner[olen] = '\0';
	if (!all_of(owner, ALNUM "-") || !all_of(name, NAME_CHARS))
		return false;
	return strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

bool
config_valid_workflow(const char *workflow)
{
	size_t len = strlen(workflow);

	if (all_of(workflow, DIGITS))
		return len <= 19;
	if (!all_of(workflow, NAME_CHARS) || len > 255)
		return false;
	return (len > 4 && strcmp(workflow + len - 4, ".yml") == 0) ||
		   (len > 5 && strcmp(workflow + len - 5, ".yaml") == 0);
}

static bool
parse_repo(const struct opt_spec *opt, void *cfg, const char *value, bool from_env, char *err,
		   size_t errlen)
{
	char name[64];

	if (!config_valid_repo(value))
	{
		snprintf(err, errlen,
				 "invalid %s \"%.200s\": expected OWNER/NAME (letters, digits, '-'; the name "
				 "also '.' and '_')",
				 opt_origin(opt, from_env, name, sizeof name), value);
		return false;
	}
	return opt_string(opt, cfg, value, from_env, err, errlen);
}

static bool
parse_workflow(const struct opt_spec *opt, void *cfg, const char *value, bool from_env, char *err,
			   size_t errlen)
{
	char name[64];

	if (!config_valid_workflow(value))
	{
		snprintf(err, errlen,
				 "invalid %s \"%.200s\": expected a workflow file name ending in .yml or .yaml, "
				 "or a numeric workflow id",
				 opt_origin(opt, from_env, name, sizeof name), value);
		return false;
	}
	return opt_string(opt, cfg, value, from_env, err, errlen);
}

static bool
parse_ref(const struct opt_spec *opt, void *cfg, const char *value, bool from_env, char *err,
		  size_t errlen)
{
	char name[64];

	if (!visible_ascii(value) || strlen(value) > 255)
	{
		snprintf(err, errlen,
				 "invalid %s: expected a branch or tag name without spaces or control "
				 "characters, at most 255 bytes",
				 opt_origin(opt, from_env, name, sizeof name));
		return false;
	}
	return opt_string(opt, cfg, value, from_env, err, errlen);
}

static bool
parse_app_id(const struct opt_spec *opt, void *cfg, const char *value, bool from_env, char *err,
			 size_t errlen)
{
	char name[64];

	if (!all_of(value, ALNUM ".") || strlen(value) > 64)
	{
		snprintf(err, errlen,
				 "invalid %s \"%.64s\": expected the App's numeric id or its client id",
				 opt_origin(opt, from_env, name, sizeof name), value);
		return false;
	}
	return opt_string(opt, cfg, value, from_env, err, errlen);
}

static bool
parse_digits(const struct opt_spec *opt, void *cfg, const char *value, bool from_env, char *err,
			 size_t errlen)
{
	char name[64];

	if (!all_of(value, DIGITS) || strlen(value) > 19)
	{
		snprintf(err, errlen, "invalid %s \"%.64s\": expected a numeric id",
				 opt_origin(opt, from_env, name, sizeof name), value);
		return false;
	}
	return opt_string(opt, cfg, value, from_env, err, errlen);
}

static bool
parse_api(const struct opt_spec *opt, void *cfg, const char *value, bool from_env, char *err,
		  size_t errlen)
{
	struct config *c = cfg;
	char           name[64];
	size_t         len = strlen(value);
	const char    *host;

	if (strncmp(value, "https://", 8) == 0)
		host = value + 8;
	else if (strncmp(value, "http://", 7) == 0)
		host = value + 7;
	else
		host = NULL;
	if (host == NULL || host[0] == '\0' || host[0] == '/' || !visible_ascii(value) ||
		strchr(value, '?') != NULL || strchr(value, '#') != NULL || len > 1024)
	{
		snprintf(err, errlen,
				 "invalid %s \"%.200s\": expected an http:// or https:// URL without query or "
				 "fragment",
				 opt_origin(opt, from_env, name, sizeof name), value);
		return false;
	}
	if (!opt_string(opt, cfg, value, from_env, err, errlen))
		return false;
	len = strlen(c->api);
	while (len > 0 && c->api[len - 1] == '/')
		c->api[--len] = '\0';
	return true;
}

static bool
parse_ca_file(const struct opt_spec *opt, void *cfg, const char *value, bool from_env, char *err,
			  size_t errlen)
{
	char name[64];

	if (access(value, R_OK) != 0)
	{
		snprintf(err, errlen, "cannot read %s %s: %s", opt_origin(opt, from_env, name, sizeof name),
				 value, strerror(errno));
		return false;
	}
	return opt_string(opt, cfg, value, from_env, err, errlen);
}

static bool
parse_metrics_listen(const struct opt_spec *opt, void *cfg, const char *value, bool from_env,
					 char *err, size_t errlen)
{
	struct config *c = cfg;
	char           name[64];

	if (!opt_parse_listen(value, c->metrics_host, sizeof c->metrics_host, c->metrics_port,
						  sizeof c->metrics_port))
	{
		snprintf(err, errlen,
				 "invalid %s \"%.200s\": expected HOST:PORT or [IPV6]:PORT with a port from 1 to "
				 "65535",
				 opt_origin(opt, from_env, name, sizeof name), value);
		return false;
	}
	c->metrics = true;
	return true;
}

char *
config_parse_token(const char *buf, size_t len, char *err, size_t errlen)
{
	char *token;

	if (len > 0 && buf[len - 1] == '\n')
		len--;
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	if (len == 0)
	{
		snprintf(err, errlen, "the token is empty");
		return NULL;
	}
	if (len > TOKEN_MAX)
	{
		snprintf(err, errlen, "the token is longer than %d bytes", TOKEN_MAX);
		return NULL;
	}
	for (size_t i = 0; i < len; i++)
		if ((unsigned char) buf[i] <= ' ' || (unsigned char) buf[i] >= 0x7f)
		{
			snprintf(err, errlen,
					 "the token holds a space, a line break or a byte that is not visible ASCII "
					 "(at byte %zu)",
					 i + 1);
			return NULL;
		}
	token = malloc(len + 1);
	if (token == NULL)
	{
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	memcpy(token, buf, len);
	token[len] = '\0';
	return token;
}

/* Never prompts on a terminal for the passphrase of an encrypted key. */
static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void) buf;
	(void) size;
	(void) rwflag;
	(void) u;
	return 0;
}

EVP_PKEY *
config_parse_app_key(const char *pem, size_t len, char *err, size_t errlen)
{
	BIO      *bio;
	EVP_PKEY *key;

	if (len > (size_t) SECRET_FILE_MAX)
	{
		snprintf(err, errlen, "the key is larger than %d bytes", SECRET_FILE_MAX);
		return NULL;
	}
	bio = BIO_new_mem_buf(pem, (int) len);
	if (bio == NULL)
	{
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	BIO_free(bio);
	if (key == NULL)
	{
		snprintf(err, errlen,
				 "not an unencrypted private key in PEM form (\"-----BEGIN RSA PRIVATE KEY-----\" "
				 "as GitHub hands it out, or PKCS#8)");
		return NULL;
	}
	if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA)
	{
		snprintf(err, errlen, "the key is not an RSA key (GitHub Apps sign with RS256)");
		EVP_PKEY_free(key);
		return NULL;
	}
	if (EVP_PKEY_get_bits(key) < APP_KEY_BITS)
	{
		snprintf(err, errlen, "the RSA key has %d bits; at least %d are needed",
				 EVP_PKEY_get_bits(key), APP_KEY_BITS);
		EVP_PKEY_free(key);
		return NULL;
	}
	return key;
}

/* Reads a whole secret file into a buffer that the caller cleanses. */
static char *
read_secret_file(const char *what, const char *path, size_t *len, char *err, size_t errlen)
{
	int    fd = open(path, O_RDONLY | O_CLOEXEC);
	char  *buf;
	size_t used = 0;

	if (fd < 0)
	{
		snprintf(err, errlen, "cannot open %s %s: %s", what, path, strerror(errno));
		return NULL;
	}
	buf = malloc(SECRET_FILE_MAX + 1);
	if (buf == NULL)
	{
		snprintf(err, errlen, "out of memory");
		close(fd);
		return NULL;
	}
	for (;;)
	{
		ssize_t n = read(fd, buf + used, SECRET_FILE_MAX + 1 - used);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
		{
			snprintf(err, errlen, "cannot read %s %s: %s", what, path, strerror(errno));
			break;
		}
		if (n == 0)
		{
			close(fd);
			buf[used] = '\0';
			*len = used;
			return buf;
		}
		used += (size_t) n;
		if (used > SECRET_FILE_MAX)
		{
			snprintf(err, errlen, "%s %s is larger than %d bytes", what, path, SECRET_FILE_MAX);
			break;
		}
	}
	close(fd);
	OPENSSL_cleanse(buf, SECRET_FILE_MAX + 1);
	free(buf);
	return NULL;
}

void
config_free_secret(char *secret)
{
	if (secret == NULL)
		return;
	OPENSSL_cleanse(secret, strlen(secret));
	free(secret);
}

static void
free_token(struct config *c)
{
	config_free_secret(c->token);
	c->token = NULL;
}

/* The token from value (environment) or the file value names (flag). */
static char *
load_token(const char *value, bool from_env, char *err, size_t errlen)
{
	char   msg[200];
	char  *token;
	char  *buf;
	size_t len;

	if (from_env)
	{
		token = config_parse_token(value, strlen(value), msg, sizeof msg);
		if (token == NULL)
			snprintf(err, errlen, "invalid PROVISION_GITHUB_TOKEN: %s", msg);
		return token;
	}
	buf = read_secret_file("token file", value, &len, err, errlen);
	if (buf == NULL)
		return NULL;
	token = config_parse_token(buf, len, msg, sizeof msg);
	if (token == NULL)
		snprintf(err, errlen, "invalid token file %s: %s", value, msg);
	OPENSSL_cleanse(buf, len);
	free(buf);
	return token;
}

static EVP_PKEY *
load_app_key(const char *value, bool from_env, char *err, size_t errlen)
{
	char      msg[200];
	EVP_PKEY *key;
	char     *buf;
	size_t    len;

	if (from_env)
	{
		key = config_parse_app_key(value, strlen(value), msg, sizeof msg);
		if (key == NULL)
			snprintf(err, errlen, "invalid PROVISION_GITHUB_APP_KEY: %s", msg);
		return key;
	}
	buf = read_secret_file("App key file", value, &len, err, errlen);
	if (buf == NULL)
		return NULL;
	key = config_parse_app_key(buf, len, msg, sizeof msg);
	if (key == NULL)
		snprintf(err, errlen, "invalid App key file %s: %s", value, msg);
	OPENSSL_cleanse(buf, len);
	free(buf);
	return key;
}

static bool
parse_token(const struct opt_spec *opt, void *cfg, const char *value, bool from_env, char *err,
			size_t errlen)
{
	struct config *c = cfg;
	char          *token = load_token(value, from_env, err, errlen);

	(void) opt;
	if (token == NULL)
		return false;
	free_token(c);
	c->token = token;
	free(c->token_path);
	c->token_path = from_env ? NULL : strdup(value);
	if (!from_env && c->token_path == NULL)
	{
		snprintf(err, errlen, "out of memory");
		return false;
	}
	return true;
}

static bool
parse_app_key(const struct opt_spec *opt, void *cfg, const char *value, bool from_env, char *err,
			  size_t errlen)
{
	struct config *c = cfg;
	EVP_PKEY      *key = load_app_key(value, from_env, err, errlen);

	(void) opt;
	if (key == NULL)
		return false;
	EVP_PKEY_free(c->app_key);
	c->app_key = key;
	free(c->app_key_path);
	c->app_key_path = from_env ? NULL : strdup(value);
	if (!from_env && c->app_key_path == NULL)
	{
		snprintf(err, errlen, "out of memory");
		return false;
	}
	return true;
}

/* Which credentials were given: a token, or all three App options. */
static bool
check_auth(struct config *c, char *err, size_t errlen)
{
	bool any_app = c->app_id != NULL || c->app_key != NULL || c->installation_id != NULL;

	if (c->token != NULL && any_app)
	{
		snprintf(err, errlen,
				 "both a token and GitHub App options are set: use either the token "
				 "(PROVISION_GITHUB_TOKEN or --token-file) or --app-id, --app-key-file and "
				 "--installation-id");
		return false;
	}
	if (c->token != NULL)
	{
		c->auth = AUTH_TOKEN;
		return true;
	}
	if (!any_app)
	{
		snprintf(err, errlen,
				 "no GitHub credentials: set PROVISION_GITHUB_TOKEN or --token-file PATH, or the "
				 "GitHub App options --app-id, --app-key-file and --installation-id");
		return false;
	}
	if (c->app_id == NULL || c->app_key == NULL || c->installation_id == NULL)
	{
		snprintf(err, errlen,
				 "GitHub App authentication needs --app-id, --app-key-file and --installation-id "
				 "(or their variables); %s is missing",
				 c->app_id == NULL    ? "--app-id"
				 : c->app_key == NULL ? "--app-key-file"
									  : "--installation-id");
		return false;
	}
	c->auth = AUTH_APP;
	return true;
}

enum config_result
config_parse(struct config *cfg, int argc, char **argv, config_env_fn env, char *err, size_t errlen)
{
	memset(cfg, 0, sizeof *cfg);
	switch (opt_parse(options, NOPTIONS, cfg, argc, argv, env, err, errlen))
	{
		case OPT_HELP:
			return CONFIG_HELP;
		case OPT_VERSION:
			return CONFIG_VERSION;
		case OPT_ERROR:
			return CONFIG_ERROR;
		case OPT_OK:
			break;
	}
	if (cfg->repo == NULL)
	{
		snprintf(err, errlen, "no repository: set PROVISION_GITHUB_REPO or pass --repo OWNER/NAME");
		return CONFIG_ERROR;
	}
	if (!check_auth(cfg, err, errlen))
		return CONFIG_ERROR;
	return CONFIG_OK;
}

bool
config_reload_credentials(struct config *cfg, char *err, size_t errlen)
{
	err[0] = '\0';
	if (cfg->auth == AUTH_TOKEN && cfg->token_path != NULL)
	{
		char *token = load_token(cfg->token_path, false, err, errlen);

		if (token == NULL)
			return false;
		free_token(cfg);
		cfg->token = token;
		return true;
	}
	if (cfg->auth == AUTH_APP && cfg->app_key_path != NULL)
	{
		EVP_PKEY *key = load_app_key(cfg->app_key_path, false, err, errlen);

		if (key == NULL)
			return false;
		EVP_PKEY_free(cfg->app_key);
		cfg->app_key = key;
		return true;
	}
	return false;
}

void
config_free(struct config *cfg)
{
	free(cfg->database);
	free(cfg->repo);
	free(cfg->workflow);
	free(cfg->ref);
	free(cfg->api);
	free(cfg->ca_file);
	free_token(cfg);
	free(cfg->token_path);
	free(cfg->app_id);
	EVP_PKEY_free(cfg->app_key);
	free(cfg->app_key_path);
	free(cfg->installation_id);
	memset(cfg, 0, sizeof *cfg);
}

void
config_usage(FILE *out)
{
	fprintf(out, "usage: provision-dispatcher [OPTION]...\n"
				 "Claims pending provisioning jobs in PostgreSQL and starts one GitHub Actions\n"
				 "workflow run per job (workflow_dispatch), recording which run owns the job.\n\n"
				 "Every option may also come from its environment variable; flags win.\n"
				 "Durations take ms, s (the default unit) or m. Credentials: a token, or the\n"
				 "three GitHub App options; never on the command line.\n\n");
	opt_usage(out, options, NOPTIONS);
}
