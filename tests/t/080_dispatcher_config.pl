
# The dispatcher's configuration: --help and --version exit 0; bad
# configuration exits 2 with exactly one line on stderr, before anything
# else happens (no database connection, no API call) and without the
# credential; the token and the App key never appear in the process's
# command line, environment (/proc/PID/environ) or log.

use strict;
use warnings;

use IO::Socket::INET;
use PostgreSQL::Test::Utils;
use Test::More;
use ProvisionTest;
use DispatcherTest;

my $token = $DispatcherTest::TOKEN;
my ($key_file, $public_key) = DispatcherTest::app_key();
my $key_pem = do { local (@ARGV, $/) = ($key_file); <> };

my $r = DispatcherTest::run_dispatcher_command(['--help']);
is($r->{exit}, 0, '--help exits 0');
for my $opt (qw(--database --repo --workflow --ref --token-file --app-id --app-key-file
	--installation-id --api --ca-file --batch --poll --give-up --metrics-listen --log-format
	--help --version),
	qw(PROVISION_DATABASE_URL PROVISION_GITHUB_REPO PROVISION_GITHUB_WORKFLOW PROVISION_GITHUB_REF
	PROVISION_GITHUB_TOKEN PROVISION_GITHUB_APP_ID PROVISION_GITHUB_APP_KEY
	PROVISION_GITHUB_INSTALLATION_ID PROVISION_GITHUB_API PROVISION_CA_FILE PROVISION_BATCH
	PROVISION_POLL PROVISION_GIVE_UP PROVISION_METRICS_LISTEN))
{
	like($r->{stdout}, qr/\Q$opt\E\b/, "--help mentions $opt");
}
like($r->{stdout}, qr/default: provision\.yml/, '--help shows the default workflow');
like($r->{stdout}, qr/default: https:\/\/api\.github\.com/, '--help shows the default API');

$r = DispatcherTest::run_dispatcher_command(['--version']);
is($r->{exit}, 0, '--version exits 0');
is($r->{stdout}, "provision-dispatcher $ProvisionTest::EXTVERSION\n",
	"--version prints the version of the Makefile, $ProvisionTest::EXTVERSION");

# A database that would hang if contacted: refusals must come first.
my @db = ('--database', 'host=/nonexistent dbname=provision connect_timeout=30');

sub refuses
{
	my ($name, $args, %opts) = @_;
	my $x = DispatcherTest::run_dispatcher_command([ @db, @$args ], %opts, timeout => 15);
	is($x->{exit}, 2, "$name: exit 2") or diag explain $x;
	my @lines = grep { length } split /\n/, $x->{stderr};
	is(scalar @lines, 1, "$name: one line on stderr") or diag $x->{stderr};
	like($x->{stderr}, qr/^provision-dispatcher: /, "$name: the line names the program");
	like($x->{stderr}, $opts{like}, "$name: the line says what is wrong") if $opts{like};
	unlike($x->{stderr}, qr/\Q$token\E|MII/, "$name: no credential in the message");
	return $x;
}

my %token_env = (PROVISION_GITHUB_TOKEN => $token);
refuses('no repository', [], env => \%token_env,
	like => qr/no repository: set PROVISION_GITHUB_REPO or pass --repo OWNER\/NAME/);
refuses('no credentials', [ '--repo', 'acme/agents' ],
	like => qr/no GitHub credentials: set PROVISION_GITHUB_TOKEN or --token-file PATH/);
refuses('a bad repository', [ '--repo', 'acme' ], env => \%token_env,
	like => qr/invalid --repo "acme": expected OWNER\/NAME/);
refuses('a bad repository in the variable', [],
	env => { %token_env, PROVISION_GITHUB_REPO => 'a b/c' },
	like => qr/invalid PROVISION_GITHUB_REPO "a b\/c"/);
refuses('a bad workflow', [ '--repo', 'acme/agents', '--workflow', 'provision.sh' ],
	env => \%token_env, like => qr/invalid --workflow "provision\.sh"/);
refuses('a bad API URL', [ '--repo', 'acme/agents', '--api', 'api.github.com' ],
	env => \%token_env, like => qr/invalid --api "api\.github\.com": expected an http/);
refuses('an unreadable CA file', [ '--repo', 'acme/agents', '--ca-file', '/nonexistent/ca.pem' ],
	env => \%token_env, like => qr{cannot read --ca-file /nonexistent/ca\.pem});
refuses('batch 0', [ '--repo', 'acme/agents', '--batch', '0' ], env => \%token_env,
	like => qr/invalid --batch "0": expected an integer from 1 to 1000/);
refuses('give-up not a duration', [ '--repo', 'acme/agents', '--give-up', 'soon' ],
	env => \%token_env, like => qr/invalid --give-up "soon"/);
refuses('an unknown option', [ '--repo', 'acme/agents', '--token', $token ],
	like => qr/unknown option "--token" \(see --help\)/);
refuses('a missing token file', [ '--repo', 'acme/agents', '--token-file', '/nonexistent/t' ],
	like => qr{cannot open token file /nonexistent/t: No such file or directory});
refuses('a token file of two lines',
	[ '--repo', 'acme/agents', '--token-file', DispatcherTest::write_file("$token\nmore\n") ],
	like => qr/the token holds a space, a line break/);
refuses('a token and an App', [ '--repo', 'acme/agents', '--app-id', '1' ],
	env => \%token_env, like => qr/both a token and GitHub App options are set/);
refuses('an App without its key',
	[ '--repo', 'acme/agents', '--app-id', '1', '--installation-id', '2' ],
	like => qr/--app-key-file is missing/);
refuses('an App key that is no key',
	[ '--repo', 'acme/agents', '--app-id', '1', '--installation-id', '2', '--app-key-file',
		DispatcherTest::write_file("-----BEGIN RSA PRIVATE KEY-----\nnot a key\n") ],
	like => qr/invalid App key file .*: not an unencrypted private key in PEM form/);
refuses('a bad App key in the variable',
	[ '--repo', 'acme/agents', '--app-id', '1', '--installation-id', '2' ],
	env => { PROVISION_GITHUB_APP_KEY => substr($key_pem, 0, 200) },
	like => qr/invalid PROVISION_GITHUB_APP_KEY: not an unencrypted private key/);
refuses('a bad metrics address', [ '--repo', 'acme/agents', '--metrics-listen', 'nowhere' ],
	env => \%token_env, like => qr/invalid --metrics-listen "nowhere"/);
{
	my $busy = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0,
		ReuseAddr => 1) or die "listen: $!";
	my $port = $busy->sockport;
	refuses('the metrics port in use',
		[ '--repo', 'acme/agents', '--metrics-listen', "127.0.0.1:$port" ],
		env => \%token_env,
		like => qr/cannot listen on 127\.0\.0\.1 port $port: bind: Address already in use/);
}

# The credentials at run time: in the process only.
my $node = ProvisionTest::new_node('main');
my $gh = FakeGitHub->new(tokens => [$token]);
my $d = DispatcherTest::start_dispatcher(node => $node, github => $gh);
my ($agent, $job) = ProvisionTest::new_job($node);
DispatcherTest::wait_for_run($node, $job);

sub proc_file
{
	my ($pid, $name) = @_;
	open(my $fh, '<:raw', "/proc/$pid/$name") or return undef;
	local $/;
	return scalar <$fh>;
}

my $environ = proc_file($d->pid, 'environ');
ok(defined $environ, 'read /proc/PID/environ');
unlike($environ, qr/\Q$token\E/, 'the token is gone from /proc/PID/environ');
unlike($environ, qr/PROVISION_GITHUB_TOKEN=./, 'and so is its variable');
unlike(proc_file($d->pid, 'cmdline'), qr/\Q$token\E/, 'the token is not on the command line');
is($d->stop, 0, 'SIGTERM: exit 0');
unlike($d->log_content, qr/\Q$token\E/, 'the token is not in the log');

my $app = FakeGitHub->new(app => { id => 4242, installation => 77, public_key => $public_key });
$d = DispatcherTest::start_dispatcher(node => $node, github => $app, token => undef,
	args => [ '--app-id', 4242, '--installation-id', 77 ],
	env => { PROVISION_GITHUB_APP_KEY => $key_pem });
($agent, $job) = ProvisionTest::new_job($node);
DispatcherTest::wait_for_run($node, $job);
my ($key_body) = $key_pem =~ /-----\n(.{40})/;
$environ = proc_file($d->pid, 'environ');
unlike($environ, qr/\Q$key_body\E/, 'the App key is gone from /proc/PID/environ');
unlike($environ, qr/PROVISION_GITHUB_APP_KEY=./, 'and so is its variable');
is($d->stop, 0, 'SIGTERM: exit 0');
my $log = $d->log_content;
unlike($log, qr/\Q$key_body\E/, 'the App key is not in the log');
my ($tok) = map { $_->{headers}{authorization} =~ /Bearer (\S+)/ } $app->requests(endpoint => 'dispatch');
ok($tok && $tok =~ /^ghs_/, 'an installation token was used');
unlike($log, qr/\Q$tok\E/, 'the installation token is not in the log');
my ($jwt) = map { $_->{headers}{authorization} =~ /Bearer (\S+)/ } $app->requests(endpoint => 'token');
unlike($log, qr/\Q$jwt\E/, 'nor the JWT');

done_testing();
