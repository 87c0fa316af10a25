
# Configuration: --help and --version exit 0; bad configuration (no secret,
# an empty or unreadable secret file, a secret line that is only whitespace,
# starts or ends with whitespace or is shorter than 16 bytes, a bad address,
# a bad number, an unknown option, a port already in use) exits 2 with
# exactly one line on stderr that names the line and never holds a secret;
# environment variables configure the listener and flags win over them; the
# secret variable is gone from /proc/PID/environ of the running listener.

use strict;
use warnings;

use HTTP::Tiny;
use IO::Socket::INET;
use IO::Socket::IP;
use IPC::Run ();
use MIME::Base64 ();
use PostgreSQL::Test::Utils;
use Test::More;
use ProvisionTest;

my $secret = ProvisionTest::random_secret();
my $secret_file = ProvisionTest::write_secret_file($secret);

my $r = ProvisionTest::run_listener_command(['--help']);
is($r->{exit}, 0, '--help exits 0');
for my $opt (qw(--listen --database --secret-file --max-body --tolerance --pool --threads
	--schemes --stripe-secret-file --max-connections-per-ip --help --version),
	qw(PROVISION_LISTEN PROVISION_DATABASE_URL PROVISION_WEBHOOK_SECRET PROVISION_MAX_BODY
	PROVISION_TOLERANCE PROVISION_POOL PROVISION_THREADS PROVISION_SCHEMES
	PROVISION_STRIPE_WEBHOOK_SECRET PROVISION_MAX_CONNECTIONS_PER_IP))
{
	like($r->{stdout}, qr/\Q$opt\E\b/, "--help mentions $opt");
}
like($r->{stdout}, qr/127\.0\.0\.1:8080/, '--help shows the default address');

$r = ProvisionTest::run_listener_command(['--version']);
is($r->{exit}, 0, '--version exits 0');
like($r->{stdout}, qr/provision-listener.*\b\Q$ProvisionTest::EXTVERSION\E\b/, "--version names the program and version $ProvisionTest::EXTVERSION");

# One line on stderr, exit 2, nothing from a secret.
sub refuses
{
	my ($name, $args, %opts) = @_;
	my $x = ProvisionTest::run_listener_command($args, %opts, timeout => 15);
	is($x->{exit}, 2, "$name: exit 2") or diag explain $x;
	my @lines = grep { length } split /\n/, $x->{stderr};
	is(scalar @lines, 1, "$name: one line on stderr") or diag $x->{stderr};
	like($x->{stderr}, $opts{like}, "$name: the line says what is wrong") if $opts{like};
	unlike($x->{stderr}, qr/\Q$secret\E/, "$name: no secret in the message");
	return $x;
}

my $port = PostgreSQL::Test::Cluster::get_free_port();
my @db = ('--database', 'host=/nonexistent dbname=provision');
my @base = ('--listen', "127.0.0.1:$port", @db);

refuses('no secret', [@base], like => qr/secret/i);
refuses('secret file missing', [ @base, '--secret-file', '/nonexistent/secret' ],
	like => qr{/nonexistent/secret});
{
	my $empty = ProvisionTest::write_secret_file();
	refuses('secret file empty', [ @base, '--secret-file', $empty ], like => qr/secret/i);
	my $unreadable = ProvisionTest::write_secret_file($secret);
	chmod 0000, $unreadable;
  SKIP:
	{
		skip 'root reads any file', 4 if open(my $fh, '<', $unreadable);
		refuses('secret file unreadable', [ @base, '--secret-file', $unreadable ],
			like => qr/\Q$unreadable\E/);
	}
}
refuses('secret is a directory', [ @base, '--secret-file', PostgreSQL::Test::Utils::tempdir() ]);
refuses('bad whsec_ secret', [ @base, '--secret-file', ProvisionTest::write_secret_file('whsec_!!notbase64!!') ],
	like => qr/whsec|base64/i);
refuses('empty PROVISION_WEBHOOK_SECRET', [@base], env => { PROVISION_WEBHOOK_SECRET => '' },
	like => qr/secret/i);

# The line rules of a secret file and of PROVISION_WEBHOOK_SECRET: the
# message names the file (or the variable) and the line, never the secret.
{
	my $other = ProvisionTest::random_secret();
	my $short = 'short-0123abcde';    # 15 bytes
	my $short_whsec = 'whsec_' . MIME::Base64::encode_base64('fifteen bytes!!', '');
	my @cases = (
		[ 'a line of spaces', "$secret
   
$other
", 2, qr/only whitespace/, $other ],
		[ 'a tab-only line after a CRLF line', "$secret
	
", 2, qr/only whitespace/,
			$secret ],
		[ 'a leading space', "$secret

 $other
", 3, qr/starts or ends with whitespace/,
			$other ],
		[ 'a trailing space before CRLF', "$other 
", 1,
			qr/starts or ends with whitespace/, $other ],
		[ 'a raw secret of 15 bytes', "$secret
$short
", 2, qr/shorter than 16 bytes/,
			$short ],
		[ 'a whsec_ secret of 15 bytes', "$short_whsec
", 1,
			qr/shorter than 16 bytes after base64 decoding/, $short_whsec ],
	);
	for my $c (@cases)
	{
		my ($name, $text, $line, $re, $hidden) = @$c;
		my $dir = PostgreSQL::Test::Utils::tempdir();
		my $file = "$dir/secret";
		open(my $fh, '>', $file) or die "$file: $!";
		print $fh $text;
		close $fh;
		my $x = refuses("secret file with $name", [ @base, '--secret-file', $file ],
			like => qr/\Q$file\E.*\bline $line\b.*$re/);
		unlike($x->{stderr}, qr/\Q$hidden\E/, "secret file with $name: that secret not printed");

		(my $env_text = $text) =~ s/\n\z//;
		$x = refuses("PROVISION_WEBHOOK_SECRET with $name", [@base],
			env => { PROVISION_WEBHOOK_SECRET => $env_text },
			like => qr/PROVISION_WEBHOOK_SECRET.*\bline $line\b.*$re/);
		unlike($x->{stderr}, qr/\Q$hidden\E/,
			"PROVISION_WEBHOOK_SECRET with $name: that secret not printed");
	}
}

for my $addr ('nonsense', '127.0.0.1', '127.0.0.1:99999', '127.0.0.1:http', '300.1.2.3:8000', ':')
{
	refuses("--listen $addr", [ '--listen', $addr, @db, '--secret-file', $secret_file ],
		like => qr/listen|address|port/i);
}
refuses('PROVISION_LISTEN bad', [ @db, '--secret-file', $secret_file ],
	env => { PROVISION_LISTEN => 'nowhere' }, like => qr/listen|address/i);
for my $bad ([ '--max-body', '0' ], [ '--max-body', '12kb?' ], [ '--pool', '0' ], [ '--pool', 'many' ],
	[ '--tolerance', '-1' ], [ '--threads', '0' ])
{
	refuses("@$bad", [ @base, '--secret-file', $secret_file, @$bad ], like => qr/\Q$bad->[0]\E|\Q$bad->[1]\E/);
}
for my $bad ('gitlab', 'standard,', '', 'standard;github', 'Standard')
{
	refuses("--schemes '$bad'", [ @base, '--secret-file', $secret_file, '--schemes', $bad ],
		like => qr/^provision-listener: invalid --schemes "\Q$bad\E": expected a comma-separated list of standard and github$/);
}
refuses('PROVISION_SCHEMES bad', [ @base, '--secret-file', $secret_file ],
	env => { PROVISION_SCHEMES => 'stripe' }, like => qr/PROVISION_SCHEMES "stripe"/);
{
	my $stripe = 'whsec_' . ('A' x 32);
	my $bad = ProvisionTest::write_secret_file($stripe, 'whsec_short');
	my $x = refuses('Stripe secret file with a short secret',
		[ @base, '--secret-file', $secret_file, '--stripe-secret-file', $bad ],
		like => qr/invalid secret file \Q$bad\E: secret on line 2 is shorter than 16 bytes$/);
	unlike($x->{stderr}, qr/whsec_/, 'Stripe secret file: no secret in the message');
	$x = refuses('PROVISION_STRIPE_WEBHOOK_SECRET with a trailing space',
		[ @base, '--secret-file', $secret_file ],
		env => { PROVISION_STRIPE_WEBHOOK_SECRET => "$stripe " },
		like => qr/invalid PROVISION_STRIPE_WEBHOOK_SECRET: secret on line 1 starts or ends with whitespace$/);
	unlike($x->{stderr}, qr/whsec_/, 'PROVISION_STRIPE_WEBHOOK_SECRET: no secret in the message');
	refuses('Stripe secret file missing',
		[ @base, '--secret-file', $secret_file, '--stripe-secret-file', '/nonexistent/stripe' ],
		like => qr{/nonexistent/stripe});
}
refuses('--max-connections-per-ip -1',
	[ @base, '--secret-file', $secret_file, '--max-connections-per-ip', '-1' ],
	like => qr/--max-connections-per-ip "-1": expected an integer from 0 to 1000000/);
refuses('unknown option', [ @base, '--secret-file', $secret_file, '--frobnicate' ],
	like => qr/frobnicate/);
refuses('secret as a command-line value is not an option', [ @base, '--secret', $secret ]);

# A port already in use.
{
	my $busy = IO::Socket::INET->new(Listen => 5, LocalAddr => '127.0.0.1', LocalPort => 0,
		Proto => 'tcp', ReuseAddr => 1) or die "bind: $!";
	my $busy_port = $busy->sockport;
	refuses('port in use', [ '--listen', "127.0.0.1:$busy_port", @db, '--secret-file', $secret_file ],
		like => qr/\Q$busy_port\E|in use/i);
	close $busy;
}

# Environment variables configure it; flags win.
my $node = ProvisionTest::new_node('config');
my (undef, $job) = ProvisionTest::new_job($node, status => 'provisioning');

# IPv6 loopback, where the machine has it.
SKIP:
{
	my $probe = IO::Socket::IP->new(Listen => 1, LocalHost => '::1', LocalPort => 0);
	skip 'no IPv6 loopback', 2 unless $probe;
	my $v6port = $probe->sockport;
	close $probe;
	my $h = IPC::Run::start([ ProvisionTest::listener_binary(), '--listen', "[::1]:$v6port",
		'--database', ProvisionTest::conninfo($node),
		'--secret-file', $secret_file ], '>', \my $out, '2>', \my $err);
	my $ok = ProvisionTest::wait_until(sub {
		HTTP::Tiny->new(timeout => 2)->get("http://[::1]:$v6port/healthz")->{status} == 200 });
	ok($ok, '--listen [::1]:PORT serves on the IPv6 loopback');
	$h->signal('TERM');
	$h->finish;
	is($h->result(0), 0, 'IPv6 listener exits 0');
}

my $env_port = PostgreSQL::Test::Cluster::get_free_port();
my $l = ProvisionTest::start_listener(
	node => $node,
	secret_env => 1,
	secrets => [$secret],
	env => {
		PROVISION_LISTEN    => '127.0.0.1:1',    # overridden by --listen
		PROVISION_MAX_BODY  => '200',
		PROVISION_TOLERANCE => '5',
		PROVISION_POOL      => '3',
	});
my $big = ProvisionTest::encode_json({ job_id => $job, status => 'heartbeat', pad => 'x' x 200 });
is($l->callback($big)->{status}, 413, 'PROVISION_MAX_BODY applies');
is($l->callback({ job_id => $job, status => 'heartbeat' }, scheme => 'standard',
		timestamp => time() - 60)->{status}, 401, 'PROVISION_TOLERANCE applies');
is($l->callback({ job_id => $job, status => 'heartbeat' })->{status}, 200,
	'PROVISION_WEBHOOK_SECRET verifies; --listen won over PROVISION_LISTEN');
{
	# The variable is overwritten in place, not only unset: the kernel's
	# copy of the initial environment is what /proc/PID/environ shows.
	my $pid = $l->pid;
	open(my $fh, '<:raw', "/proc/$pid/environ") or die "/proc/$pid/environ: $!";
	local $/;
	my $environ = <$fh>;
	close $fh;
	like($environ, qr/(^|\0)PROVISION_POOL=3\0/, "/proc/$pid/environ is readable and holds the other variables");
	unlike($environ, qr/\Q$secret\E/, 'the secret is not in /proc/PID/environ');
	unlike($environ, qr/\Q${\substr($secret, 3, 16)}\E/, 'no part of the secret either');
}
is(ProvisionTest::metric_sum($l->metrics, 'provision_db_pool_size'), 3, 'PROVISION_POOL applies');
is($l->stop, 0, 'listener exits 0');

$l = ProvisionTest::start_listener(node => $node, secrets => [$secret],
	env => { PROVISION_MAX_BODY => '200' }, args => [ '--max-body', '100000' ]);
is($l->callback($big)->{status}, 200, '--max-body wins over PROVISION_MAX_BODY');
is($l->stop, 0, 'listener exits 0');

$l = ProvisionTest::start_listener(node => $node, port => $env_port, via_env => 1,
	secrets => [$secret]);
is($l->port, $env_port, 'PROVISION_LISTEN sets the address');
is($l->get('/readyz')->{status}, 200, 'PROVISION_DATABASE_URL sets the database');
is($l->stop, 0, 'listener exits 0');

done_testing();
