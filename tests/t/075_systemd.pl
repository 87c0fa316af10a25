
# The systemd unit and the database logins the operator guide documents for
# it. systemd-analyze verifies examples/provision-listener.service with its
# drop-in (no warning allowed). Then the listener starts the way the unit
# starts it (configuration from the environment of
# /etc/default/provision-listener, the secret file in a credentials
# directory) and logs in as provision_listener, both ways the guide shows:
#
# - on the database host, peer authentication with the guide's pg_ident.conf
#   map and pg_hba.conf line (the service's OS user, provision-listener, is
#   the user running this test here). Debian's default "local all all peer"
#   alone refuses it, which is the stall the guide explains.
# - from another host, a password from a .pgpass-format credential over TLS
#   with sslmode=verify-full, PGPASSFILE and PGSSLROOTCERT set as the drop-in
#   sets them, against the guide's hostssl line. Without the drop-in's
#   variables the login fails.

use strict;
use warnings;

use File::Copy qw(copy);
use File::Path qw(make_path);
use IPC::Run ();
use PostgreSQL::Test::Utils;
use Test::More;
use ProvisionTest;

my $root = ProvisionTest::repo_root();
my $unit_file = "$root/examples/provision-listener.service";
my $dropin_file = "$root/examples/provision-listener.service.d/database-password.conf";
my $guide = slurp_file("$root/docs/operator-guide.md");
my $unit = slurp_file($unit_file);
my $dropin = slurp_file($dropin_file);
my $os_user = getpwuid($<);
my $secret = ProvisionTest::random_secret();

# The fenced block of the guide whose first line is $first (a comment naming
# the file it shows), without that line and without comment lines.
sub guide_lines
{
	my ($first) = @_;
	my ($text) = $guide =~ /^```\w*\n\Q$first\E\n(.*?)^```$/ms;
	BAIL_OUT("docs/operator-guide.md has no block starting with \"$first\"") unless defined $text;
	return join '', grep { !/^#/ } split /^/, $text;
}

# ---- systemd-analyze verify --------------------------------------------------
SKIP:
{
	my ($sa) = grep { -x } map { "$_/systemd-analyze" } split /:/, $ENV{PATH};
	skip 'systemd-analyze is not installed (Debian: systemd; scripts/deps test installs it)', 2
	  unless $sa;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	# A unit that cannot be wrong: when even it fails, systemd-analyze cannot
	# run here (some containers lack what it needs), which is no fault of ours.
	PostgreSQL::Test::Utils::append_to_file("$dir/probe.service",
		"[Service]\nType=exec\nExecStart=/bin/true\n");
	my ($out, $err) = ('', '');
	IPC::Run::run([ $sa, 'verify', "$dir/probe.service" ], '>', \$out, '2>', \$err);
	skip "systemd-analyze cannot run here: $err", 2 if $? != 0;

	# The unit as installed, with ExecStart naming the listener under test
	# (verify checks that the program exists and is executable).
	my $bin = ProvisionTest::listener_binary();
	(my $copy = $unit) =~ s{^ExecStart=/usr/local/bin/provision-listener }{ExecStart=$bin }m
	  or BAIL_OUT('the unit does not start /usr/local/bin/provision-listener');
	make_path("$dir/units/provision-listener.service.d");
	PostgreSQL::Test::Utils::append_to_file("$dir/units/provision-listener.service", $copy);
	copy($dropin_file, "$dir/units/provision-listener.service.d/database-password.conf")
	  or die "copy: $!";
	($out, $err) = ('', '');
	local $ENV{SYSTEMD_UNIT_PATH} = "$dir/units:";
	IPC::Run::run([ $sa, 'verify', 'provision-listener.service' ], '>', \$out, '2>', \$err);
	is($?, 0, 'systemd-analyze verify accepts the unit and its drop-in');
	is($out . $err, '', 'without a single warning');
}

# ---- the listener as the unit starts it ------------------------------------------
my ($exec) = $unit =~ /^ExecStart=\S+ (.*)$/m;
is($exec, '--secret-file %d/webhook-secret', 'the unit passes only the credential secret file');
my ($default) = $guide =~ /^cat > \/etc\/default\/provision-listener <<'EOT'\n(.*?)^EOT$/ms;
ok($default, 'the guide shows /etc/default/provision-listener');
my %env = map { /^(\w+)=(.*)$/ ? ($1 => $2) : () } split /\n/, $default // '';
like($env{PROVISION_DATABASE_URL} // '', qr/^host=\/var\/run\/postgresql /,
	'the documented database URL uses the Unix socket');

# A credentials directory as systemd makes it: the copies readable by the
# service alone.
sub credentials
{
	my (%files) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	chmod 0700, $dir;
	for my $name (keys %files)
	{
		PostgreSQL::Test::Utils::append_to_file("$dir/$name", $files{$name});
		chmod 0400, "$dir/$name";
	}
	return $dir;
}

# start($conninfo, $creds, %env): the listener with the unit's command line
# and environment. HOME is empty, as a dynamic user has no home.
sub start
{
	my ($conninfo, $creds, %extra) = @_;
	my $home = PostgreSQL::Test::Utils::tempdir();
	return ProvisionTest::start_listener(
		database => $conninfo,
		via_env => 1,
		secret_file => "$creds/webhook-secret",
		secrets => [$secret],
		env => { HOME => $home, %extra });
}

# /readyz once the pool had time to connect (it retries with backoff).
sub readyz
{
	my ($l) = @_;
	my $status;
	ProvisionTest::wait_until(sub { ($status = $l->get('/readyz')->{status}) == 200 }, timeout => 10);
	return $status;
}

# ---- peer authentication with a map -------------------------------------------------
my $node = ProvisionTest::new_node('peer');
ProvisionTest::create_listener_role($node);
my $socket_conninfo = $env{PROVISION_DATABASE_URL};
$socket_conninfo =~ s{host=/var/run/postgresql}{'host=' . $node->host . ' port=' . $node->port}e;
my $creds = credentials('webhook-secret' => "$secret\n");

# Debian's pg_hba.conf for local connections: the OS user is the role.
PostgreSQL::Test::Utils::append_to_file($node->data_dir . '/pg_hba.conf.new', "local all all peer\n");
rename($node->data_dir . '/pg_hba.conf.new', $node->data_dir . '/pg_hba.conf') or die "rename: $!";
$node->reload;

my $l = start($socket_conninfo, $creds);
# The log escapes the quotes around the role's name.
ok($l->wait_for_log(qr/Peer authentication failed for user (?:"|\\x22)provision_listener/),
	"Debian's \"local all all peer\" alone refuses the documented login");
is($l->get('/readyz')->{status}, 503, '/readyz answers 503');
$l->stop;

my $ident = guide_lines('# /etc/postgresql/15/main/pg_ident.conf');
like($ident, qr/^provision\s+provision-listener\s+provision_listener$/m,
	'the guide maps the service user provision-listener to provision_listener');
$ident =~ s/\bprovision-listener\b/$os_user/;
my $hba = guide_lines('# /etc/postgresql/15/main/pg_hba.conf, above "local all all peer"');
like($hba, qr/^local\s+provision\s+provision_listener\s+peer map=provision$/m,
	'the guide lets the role in through that map');
PostgreSQL::Test::Utils::append_to_file($node->data_dir . '/pg_ident.conf', $ident);
PostgreSQL::Test::Utils::append_to_file($node->data_dir . '/pg_hba.conf.new', $hba . "local all all peer\n");
rename($node->data_dir . '/pg_hba.conf.new', $node->data_dir . '/pg_hba.conf') or die "rename: $!";
$node->reload;

$l = start($socket_conninfo, $creds);
is(readyz($l), 200, "with the guide's map and line, the listener logs in: /readyz 200");
my (undef, $job) = ProvisionTest::new_job($node, status => 'dispatched');
my $r = $l->callback({ job_id => $job, status => 'provisioning' });
is($r->{status}, 200, 'and applies a callback');
is(ProvisionTest::job_row($node, $job)->{status}, 'provisioning', 'the job moved');
is($l->stop, 0, 'the listener stops on SIGTERM');

# ---- a password over TLS from another host -------------------------------------------
my $tls = PostgreSQL::Test::Utils::tempdir();
my ($out, $err) = ('', '');
IPC::Run::run([ 'openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
		'-subj', '/CN=db.example.com', '-addext', 'subjectAltName=DNS:db.example.com',
		'-keyout', "$tls/server.key", '-out', "$tls/server.crt" ],
	'>', \$out, '2>', \$err)
  or BAIL_OUT("openssl req: $err");
chmod 0600, "$tls/server.key";
my $db = ProvisionTest::new_node('remote', conf => "listen_addresses = '127.0.0.1'\nssl = on\n"
	  . "ssl_cert_file = '$tls/server.crt'\nssl_key_file = '$tls/server.key'\n");
ProvisionTest::create_listener_role($db);
my $password = unpack 'H*', join '', map { chr int rand 256 } 1 .. 16;
$db->safe_psql('provision', "ALTER ROLE provision_listener PASSWORD '$password'");

my $remote_hba = guide_lines(
	'# /etc/postgresql/15/main/pg_hba.conf on the database host (the listener at 10.0.0.5)');
like($remote_hba, qr{^hostssl\s+provision\s+provision_listener\s+10\.0\.0\.5/32\s+scram-sha-256$}m,
	'the guide lets the role in over TLS with a password');
$remote_hba =~ s{10\.0\.0\.5/32}{127.0.0.1/32};
PostgreSQL::Test::Utils::append_to_file($db->data_dir . '/pg_hba.conf.new',
	$remote_hba . "local all all peer\n");
rename($db->data_dir . '/pg_hba.conf.new', $db->data_dir . '/pg_hba.conf') or die "rename: $!";
$db->reload;

my ($remote_url) = $guide =~ /^sed -i 's\|\^PROVISION_DATABASE_URL=\.\*\|PROVISION_DATABASE_URL=([^|]*)\|'/m;
is($remote_url, 'host=db.example.com dbname=provision user=provision_listener sslmode=verify-full',
	'the guide names the server as its certificate does, with sslmode=verify-full');
$remote_url //= '';
# db.example.com does not resolve here: hostaddr connects, host still names
# the server for the certificate check and the password file.
my $remote_conninfo = "$remote_url hostaddr=127.0.0.1 port=" . $db->port;

my ($pgpass_line) = $guide =~ /'(db\.example\.com:5432:provision:provision_listener:PASSWORD)'/;
ok($pgpass_line, 'the guide shows the password file line');
$pgpass_line //= '';
$pgpass_line =~ s/:5432:/':' . $db->port . ':'/e;
$pgpass_line =~ s/PASSWORD$/$password/;
my $remote_creds = credentials(
	'webhook-secret' => "$secret\n",
	'pgpass' => "$pgpass_line\n",
	'db-ca.crt' => slurp_file("$tls/server.crt"));

my %dropin_env;
for my $line ($dropin =~ /^Environment=(.*)$/mg)
{
	for my $kv (split ' ', $line)
	{
		my ($k, $v) = split /=/, $kv, 2;
		$v =~ s/%d/$remote_creds/g;
		$dropin_env{$k} = $v;
	}
}
is_deeply([ sort keys %dropin_env ], [ 'PGPASSFILE', 'PGSSLROOTCERT' ],
	'the drop-in points libpq at the password file and the CA');
my %loaded = map { /^LoadCredential=([^:]+):/ ? ($1 => 1) : () } split /\n/, $dropin;
is_deeply([ sort keys %loaded ], [ 'db-ca.crt', 'pgpass' ], 'and loads both as credentials');

$l = start($remote_conninfo, $remote_creds);
ok($l->wait_for_log(qr/no password supplied|root certificate file/),
	'without the drop-in the login fails');
is($l->get('/readyz')->{status}, 503, '/readyz answers 503');
$l->stop;

$l = start($remote_conninfo, $remote_creds, %dropin_env);
is(readyz($l), 200, 'with the password file and the CA, the listener logs in over TLS');
(undef, $job) = ProvisionTest::new_job($db, status => 'dispatched');
$r = $l->callback({ job_id => $job, status => 'provisioning' });
is($r->{status}, 200, 'and applies a callback');
is($db->safe_psql('provision',
		q{SELECT ssl FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
		   WHERE usename = 'provision_listener' LIMIT 1}),
	't', 'its connections use TLS');
is($l->stop, 0, 'the listener stops on SIGTERM');

done_testing();
