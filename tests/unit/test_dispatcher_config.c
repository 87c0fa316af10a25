/*
 * test_dispatcher_config.c - the dispatcher's options: defaults, flags over
 * variables, every refusal with the one line it prints (naming the option,
 * never the credential), the token and App key rules, and SIGHUP's
 * re-reading of a credential file.
 */
#include "config.h"
#include "tap.h"
#include "test_keys.h"

#include <openssl/pem.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOKEN "ghp_R2d2C3p0Secret0123456789abcdefghij"

static char tmpdir[] = "/tmp/provision-test-dispatcher-config-XXXXXX";

static const char *
write_file(const char *name, const char *content)
{
	static char path[8][256];
	static int  next;
	char       *p = path[next++ % 8];
	FILE       *f;

	snprintf(p, 256, "%s/%s", tmpdir, name);
	f = fopen(p, "w");
	fputs(content, f);
	fclose(f);
	return p;
}

/* Parses argv (NULL-terminated) with env; err gets the line. */
static enum config_result
parse(struct config *cfg, const char *const *argv, const char *const *env, char *err, size_t len)
{
	int argc = 0;

	while (argv[argc] != NULL)
		argc++;
	tap_env = env;
	return config_parse(cfg, argc, (char **) argv, tap_getenv, err, len);
}

/* Expects a refusal whose line holds want and no credential. */
static void
refused(const char *name, const char *const *argv, const char *const *env, const char *want)
{
	struct config cfg;
	char          err[1024];

	is_int(parse(&cfg, argv, env, err, sizeof err), CONFIG_ERROR, "%s: refused", name);
	ok(strstr(err, want) != NULL, "%s: says \"%s\" (%s)", name, want, err);
	ok(strstr(err, TOKEN) == NULL && strstr(err, "MII") == NULL && strchr(err, '\n') == NULL,
	   "%s: one line, no credential", name);
	config_free(&cfg);
}

static char *
pem_of(EVP_PKEY *key)
{
	BIO  *bio = BIO_new(BIO_s_mem());
	char *data;
	long  len;
	char *copy;

	PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL);
	len = BIO_get_mem_data(bio, &data);
	copy = strndup(data, (size_t) len);
	BIO_free(bio);
	return copy;
}

static void
test_defaults(void)
{
	const char *const argv[] = {"d", NULL};
	const char *const env[] = {"PROVISION_GITHUB_REPO=acme/agents", "PROVISION_GITHUB_TOKEN=" TOKEN,
							   NULL};
	struct config     cfg;
	char              err[512];

	is_int(parse(&cfg, argv, env, err, sizeof err), CONFIG_OK, "repo and token: enough (%s)", err);
	is_str(cfg.repo, "acme/agents", "repo");
	is_str(cfg.workflow, "provision.yml", "default workflow");
	is_str(cfg.ref, "main", "default ref");
	is_str(cfg.api, "https://api.github.com", "default API");
	is_str(cfg.database, "", "default database: libpq's defaults");
	is_int(cfg.batch, 10, "default batch");
	is_int(cfg.poll_ms, 5000, "default poll: 5 s");
	is_int(cfg.give_up_ms, 600000, "default give-up: 600 s");
	is_int(cfg.request_timeout_ms, 30000, "default request timeout");
	is_int(cfg.shutdown_timeout_ms, 30000, "default shutdown timeout");
	ok(!cfg.metrics, "no metrics server by default");
	ok(cfg.ca_file == NULL, "the system's CAs by default");
	is_int(cfg.auth, AUTH_TOKEN, "token authentication");
	is_str(cfg.token, TOKEN, "the token from the variable");
	ok(cfg.token_path == NULL, "which cannot be read again");
	is_int(cfg.log_format, LOG_FORMAT_TEXT, "text logs");
	config_free(&cfg);
}

static void
test_flags_win(void)
{
	const char       *token_file = write_file("token", TOKEN "\r\n");
	const char *const argv[] = {"d",
								"--repo",
								"flag/repo",
								"--batch=3",
								"--poll",
								"200ms",
								"--give-up",
								"0",
								"--workflow",
								"12345678",
								"--ref",
								"v1.2.3",
								"--api",
								"https://ghe.example.com/api/v3/",
								"--metrics-listen",
								"[::1]:9464",
								"--token-file",
								token_file,
								"--log-format",
								"json",
								NULL};
	const char *const env[] = {"PROVISION_GITHUB_REPO=env/repo", "PROVISION_BATCH=7",
							   "PROVISION_GITHUB_TOKEN=env-token", "PROVISION_POLL=", NULL};
	struct config     cfg;
	char              err[512];

	is_int(parse(&cfg, argv, env, err, sizeof err), CONFIG_OK, "flags parse (%s)", err);
	is_str(cfg.repo, "flag/repo", "--repo wins over its variable");
	is_int(cfg.batch, 3, "--batch=3 form");
	is_int(cfg.poll_ms, 200, "--poll takes a duration");
	is_int(cfg.give_up_ms, 0, "--give-up 0 is allowed");
	is_str(cfg.workflow, "12345678", "a numeric workflow id");
	is_str(cfg.ref, "v1.2.3", "a tag");
	is_str(cfg.api, "https://ghe.example.com/api/v3", "trailing slash dropped");
	ok(cfg.metrics, "metrics server on");
	is_str(cfg.metrics_host, "::1", "IPv6 host without brackets");
	is_str(cfg.metrics_port, "9464", "metrics port");
	is_str(cfg.token, TOKEN, "--token-file wins; its CRLF dropped");
	is_str(cfg.token_path, token_file, "the file is remembered for SIGHUP");
	is_int(cfg.log_format, LOG_FORMAT_JSON, "json logs");
	config_free(&cfg);
}

static void
test_refusals(void)
{
	const char *const token_env[] = {"PROVISION_GITHUB_TOKEN=" TOKEN, NULL};
	const char *const repo_env[] = {"PROVISION_GITHUB_REPO=o/r", NULL};
	const char *const both_env[] = {"PROVISION_GITHUB_REPO=o/r", "PROVISION_GITHUB_TOKEN=" TOKEN,
									NULL};
	const char       *two_lines = write_file("two", TOKEN "\nsecond\n");
	const char       *empty = write_file("empty", "\n");
	const char       *spaced = write_file("spaced", "ghp_a b\n");

	refused("no repository", (const char *const[]){"d", NULL}, token_env,
			"no repository: set PROVISION_GITHUB_REPO or pass --repo OWNER/NAME");
	refused("repo without a slash", (const char *const[]){"d", "--repo", "acme", NULL}, token_env,
			"invalid --repo \"acme\": expected OWNER/NAME");
	refused("repo with two slashes", (const char *const[]){"d", "--repo", "a/b/c", NULL}, token_env,
			"invalid --repo");
	refused("repo name ..", (const char *const[]){"d", "--repo", "a/..", NULL}, token_env,
			"invalid --repo");
	refused("workflow not yml", (const char *const[]){"d", "--workflow", "x.txt", NULL}, both_env,
			"invalid --workflow \"x.txt\"");
	refused("workflow path", (const char *const[]){"d", "--workflow", "../x.yml", NULL}, both_env,
			"invalid --workflow");
	refused("ref with a space", (const char *const[]){"d", "--ref", "a b", NULL}, both_env,
			"invalid --ref");
	refused("api not http", (const char *const[]){"d", "--api", "ftp://x", NULL}, both_env,
			"invalid --api \"ftp://x\"");
	refused("api with a query", (const char *const[]){"d", "--api", "https://x/?a=b", NULL},
			both_env, "invalid --api");
	refused("batch 0", (const char *const[]){"d", "--batch", "0", NULL}, both_env,
			"invalid --batch \"0\": expected an integer from 1 to 1000");
	refused("batch from the variable", (const char *const[]){"d", NULL},
			(const char *const[]){"PROVISION_GITHUB_REPO=o/r", "PROVISION_GITHUB_TOKEN=" TOKEN,
								  "PROVISION_BATCH=lots", NULL},
			"invalid PROVISION_BATCH \"lots\"");
	refused("poll too short", (const char *const[]){"d", "--poll", "10ms", NULL}, both_env,
			"invalid --poll \"10ms\"");
	refused("metrics address", (const char *const[]){"d", "--metrics-listen", "9464", NULL},
			both_env, "invalid --metrics-listen \"9464\"");
	refused("log format", (const char *const[]){"d", "--log-format", "xml", NULL}, both_env,
			"invalid --log-format \"xml\": expected text or json");
	refused("unknown option", (const char *const[]){"d", "--token", TOKEN, NULL}, repo_env,
			"unknown option \"--token\" (see --help)");
	refused("missing value", (const char *const[]){"d", "--repo", NULL}, token_env,
			"option --repo needs a value");
	refused("ca file missing", (const char *const[]){"d", "--ca-file", "/nonexistent/ca.pem", NULL},
			both_env, "cannot read --ca-file /nonexistent/ca.pem: No such file or directory");

	refused("no credentials", (const char *const[]){"d", NULL}, repo_env,
			"no GitHub credentials: set PROVISION_GITHUB_TOKEN or --token-file PATH, or the "
			"GitHub App options --app-id, --app-key-file and --installation-id");
	refused("token file missing",
			(const char *const[]){"d", "--token-file", "/nonexistent/token", NULL}, repo_env,
			"cannot open token file /nonexistent/token: No such file or directory");
	refused("token file of two lines", (const char *const[]){"d", "--token-file", two_lines, NULL},
			repo_env, "the token holds a space, a line break or a byte that is not visible ASCII");
	refused("token file empty", (const char *const[]){"d", "--token-file", empty, NULL}, repo_env,
			"the token is empty");
	refused("token with a space", (const char *const[]){"d", "--token-file", spaced, NULL},
			repo_env, "(at byte 6)");
	refused("token variable with a newline", (const char *const[]){"d", NULL},
			(const char *const[]){"PROVISION_GITHUB_REPO=o/r",
								  "PROVISION_GITHUB_TOKEN=" TOKEN "\nX: y", NULL},
			"invalid PROVISION_GITHUB_TOKEN: the token holds a space, a line break");
}

static void
test_app(void)
{
	const char *key_file = write_file("app.pem", TEST_KEY);
	EVP_PKEY   *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	EVP_PKEY   *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 1024);
	char       *ec_pem = pem_of(ec);
	char       *small_pem = pem_of(small);
	const char *ec_file = write_file("ec.pem", ec_pem);
	const char *small_file = write_file("small.pem", small_pem);
	const char *garbage = write_file("garbage.pem", "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n");
	const char *const repo_env[] = {"PROVISION_GITHUB_REPO=o/r", NULL};
	struct config     cfg;
	char              err[512];
	char              key_env[4096];

	is_int(parse(&cfg,
				 (const char *const[]){"d", "--app-id", "123456", "--app-key-file", key_file,
									   "--installation-id", "987654", NULL},
				 repo_env, err, sizeof err),
		   CONFIG_OK, "App authentication (%s)", err);
	is_int(cfg.auth, AUTH_APP, "App mode");
	is_str(cfg.app_id, "123456", "App id");
	is_str(cfg.installation_id, "987654", "installation id");
	ok(cfg.app_key != NULL && EVP_PKEY_get_bits(cfg.app_key) == 2048, "the RSA key is loaded");
	is_str(cfg.app_key_path, key_file, "its file is remembered for SIGHUP");
	ok(cfg.token == NULL, "no token");
	config_free(&cfg);

	snprintf(key_env, sizeof key_env, "PROVISION_GITHUB_APP_KEY=%s", TEST_KEY);
	is_int(parse(&cfg, (const char *const[]){"d", NULL},
				 (const char *const[]){"PROVISION_GITHUB_REPO=o/r", "PROVISION_GITHUB_APP_ID=1",
									   key_env, "PROVISION_GITHUB_INSTALLATION_ID=2", NULL},
				 err, sizeof err),
		   CONFIG_OK, "App options from the environment, the PEM itself in the variable (%s)", err);
	ok(cfg.app_key != NULL && cfg.app_key_path == NULL, "key loaded, no file to re-read");
	config_free(&cfg);

	refused("App without the installation",
			(const char *const[]){"d", "--app-id", "1", "--app-key-file", key_file, NULL}, repo_env,
			"--installation-id is missing");
	refused("App without the key",
			(const char *const[]){"d", "--app-id", "1", "--installation-id", "2", NULL}, repo_env,
			"--app-key-file is missing");
	refused(
		"token and App",
		(const char *const[]){"d", "--app-id", "1", "--app-key-file", key_file, "--installation-id",
							  "2", NULL},
		(const char *const[]){"PROVISION_GITHUB_REPO=o/r", "PROVISION_GITHUB_TOKEN=" TOKEN, NULL},
		"both a token and GitHub App options are set");
	refused("installation id not digits",
			(const char *const[]){"d", "--installation-id", "12a", NULL}, repo_env,
			"invalid --installation-id \"12a\": expected a numeric id");
	refused("App id with a quote", (const char *const[]){"d", "--app-id", "1\"2", NULL}, repo_env,
			"invalid --app-id");
	refused("EC key", (const char *const[]){"d", "--app-key-file", ec_file, NULL}, repo_env,
			"the key is not an RSA key (GitHub Apps sign with RS256)");
	refused("1024-bit key", (const char *const[]){"d", "--app-key-file", small_file, NULL},
			repo_env, "the RSA key has 1024 bits; at least 2048 are needed");
	refused("not a key", (const char *const[]){"d", "--app-key-file", garbage, NULL}, repo_env,
			"invalid App key file");
	refused("not a key in the variable", (const char *const[]){"d", NULL},
			(const char *const[]){"PROVISION_GITHUB_REPO=o/r",
								  "PROVISION_GITHUB_APP_KEY=-----BEGIN PRIVATE KEY-----", NULL},
			"invalid PROVISION_GITHUB_APP_KEY: not an unencrypted private key in PEM form");

	EVP_PKEY_free(ec);
	EVP_PKEY_free(small);
	free(ec_pem);
	free(small_pem);
}

static void
test_reload(void)
{
	const char       *token_file = write_file("reload", "first-token\n");
	const char *const argv[] = {"d", "--token-file", token_file, NULL};
	const char *const repo_env[] = {"PROVISION_GITHUB_REPO=o/r", NULL};
	const char *const token_env[] = {"PROVISION_GITHUB_REPO=o/r", "PROVISION_GITHUB_TOKEN=" TOKEN,
									 NULL};
	struct config     cfg;
	char              err[512];

	is_int(parse(&cfg, argv, repo_env, err, sizeof err), CONFIG_OK, "token file");
	write_file("reload", "second-token\n");
	ok(config_reload_credentials(&cfg, err, sizeof err), "re-read");
	is_str(cfg.token, "second-token", "the new token is in use");
	write_file("reload", "");
	ok(!config_reload_credentials(&cfg, err, sizeof err), "an empty file is refused");
	ok(strstr(err, "the token is empty") != NULL, "and says why (%s)", err);
	is_str(cfg.token, "second-token", "the token in use is kept");
	unlink(token_file);
	ok(!config_reload_credentials(&cfg, err, sizeof err), "a missing file is refused");
	is_str(cfg.token, "second-token", "the token in use is kept");
	config_free(&cfg);

	is_int(parse(&cfg, (const char *const[]){"d", NULL}, token_env, err, sizeof err), CONFIG_OK,
		   "token from the environment");
	ok(!config_reload_credentials(&cfg, err, sizeof err) && err[0] == '\0',
	   "nothing to re-read: false without an error");
	config_free(&cfg);
}

static void
test_help_version(void)
{
	struct config cfg;
	char          err[256];

	is_int(parse(&cfg, (const char *const[]){"d", "--repo", "bad", "--help", NULL}, NULL, err,
				 sizeof err),
		   CONFIG_HELP, "--help wins over a bad value before it");
	config_free(&cfg);
	is_int(parse(&cfg, (const char *const[]){"d", "--version", NULL}, NULL, err, sizeof err),
		   CONFIG_VERSION, "--version");
	config_free(&cfg);
}

int
main(void)
{
	if (mkdtemp(tmpdir) == NULL)
		return 1;
	test_defaults();
	test_flags_win();
	test_refusals();
	test_app();
	test_reload();
	test_help_version();
	{
		char cmd[300];

		snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
		if (system(cmd) != 0)
			printf("# could not remove %s\n", tmpdir);
	}
	return done_testing();
}
