
# `make run` from a copy of the checkout, as a new user runs it: it serves
# (/readyz 200) on the address PROVISION_LISTEN names, prints a callback
# example identical to the README's, and that example, pasted as printed,
# moves the demo job to running and activates its agent. SIGINT to its process
# group (what Ctrl-C sends) stops the listener and the cluster, leaving no
# process behind. A second run reuses the cluster, the secret and the demo
# agent; after a crash (everything killed, stale postmaster.pid) a third run
# still starts. With another process answering on the port, make run stops
# before starting anything and never prints its banner. Started the way a
# script starts a background job (SIGINT ignored), make run stops on SIGTERM
# to make, and scripts/run on SIGINT.
# Without a repository and a token it runs no dispatcher and says so; a
# last run with them (against the fake GitHub) dispatches the open demo
# job and stops the dispatcher with the rest.

use strict;
use warnings;

use File::Temp ();
use HTTP::Tiny;
use IO::Socket::INET;
use IPC::Run ();
use POSIX ();
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;
use DispatcherTest;

my $root = ProvisionTest::repo_root();
my $timeout = ProvisionTest::timeout();

# A short path: the Unix socket lives in .run/ and its path is limited.
my $copy = File::Temp::tempdir('provision-run-XXXXXX', TMPDIR => 1, CLEANUP => 1);
# Everything but a .run/ of the checkout's own (possibly a live cluster);
# timestamps kept, so the copy's build is as up to date as the checkout's.
system("tar -C '$root' --exclude=./.run -cf - . | tar -C '$copy' -xpf -") == 0
  or BAIL_OUT("copying $root to $copy failed");

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $listen = "127.0.0.1:$port";
my $http = HTTP::Tiny->new(timeout => 5);
my $runs = 0;

# start_run(%opts): `make run` in its own process group (like a terminal's
# foreground job), output to a log. Options: command => [...] instead of
# make run; background => 1 starts it with SIGINT ignored, as a shell script
# starts a background job; env => {...} adds to its environment. Returns
# (pid, log path).
sub start_run
{
	my (%opts) = @_;
	$runs++;
	my $log = "$PostgreSQL::Test::Utils::log_path/070_make_run_$runs.log";
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		setpgrp(0, 0);
		chdir $copy or POSIX::_exit(126);
		delete $ENV{$_} for grep { /^(PROVISION_|PG)/ } keys %ENV;
		$ENV{PROVISION_LISTEN} = $opts{listen} // $listen;
		$SIG{INT} = 'IGNORE' if $opts{background};
		$ENV{$_} = $opts{env}{$_} for keys %{ $opts{env} // {} };
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>', $log) or POSIX::_exit(127);
		open(STDERR, '>&', \*STDOUT) or POSIX::_exit(127);
		my @cmd = @{ $opts{command} // [ 'make', 'run' ] };
		exec(@cmd) or POSIX::_exit(127);
	}
	return ($pid, $log);
}

sub alive { my ($pid) = @_; return waitpid($pid, POSIX::WNOHANG()) == 0; }

# wait_ready($pid, $log): true once /readyz answers 200 and make run has
# printed its example; false if make run exits first or time runs out.
sub wait_ready
{
	my ($pid, $log) = @_;
	# The first run may build and initdb: allow more than one plain wait.
	my $ready = ProvisionTest::wait_until(
		sub {
			return -1 unless alive($pid);
			my $r = $http->get("http://$listen/readyz");
			return $r->{status} == 200 && slurp_file($log) =~ /Ctrl-C stops/;
		},
		timeout => 4 * $timeout,
		interval => 0.2);
	return 1 if $ready && $ready == 1;
	diag(($ready ? "make run exited early" : "make run did not get ready in time")
		  . "; its output:\n" . slurp_file($log));
	kill 'KILL', -$pid if alive($pid);
	return 0;
}

# ready_or_stop($pid, $log, $name): the assertion that a run serves; the rest
# of the test depends on it, so a run that does not ends the test here.
sub ready_or_stop
{
	my ($pid, $log, $name) = @_;
	return if ok(wait_ready($pid, $log), $name);
	done_testing();
	exit 1;
}

# Processes of ours whose working directory is inside the copy (the
# postmaster and its children run in .run/pgdata, the listener in the copy).
sub processes_in_copy
{
	my @found;
	for my $d (glob '/proc/[0-9]*')
	{
		my $cwd = readlink("$d/cwd") // next;
		next unless $cwd eq $copy || index($cwd, "$copy/") == 0;
		my ($pid) = $d =~ m{(\d+)$};
		next if $pid == $$;
		my $cmd = slurp_file("$d/cmdline") // '';
		$cmd =~ s/\0/ /g;
		push @found, "$pid $cmd";
	}
	return @found;
}

# stop_run($pid, $log, $signal, $target): by default SIGINT to the process
# group (Ctrl-C), else $signal to $target; then wait for make to exit.
sub stop_run
{
	my ($pid, $log, $signal, $target) = @_;
	$signal //= 'INT';
	$target //= -$pid;
	kill $signal, $target;
	my $gone = ProvisionTest::wait_until(sub { !alive($pid) }, timeout => 2 * $timeout);
	ok($gone, "make run exits after SIG$signal (run $runs)") or do {
		kill 'KILL', -$pid;
		waitpid($pid, 0);
	};
	my $out = slurp_file($log);
	like($out, qr/make run: listener stopped/, "the listener stopped (run $runs)");
	like($out, qr/make run: stopping PostgreSQL/, "then the cluster (run $runs)");
	ok(!kill(0, -$pid), "no process of the run's process group is left (run $runs)");
	my @left = ProvisionTest::wait_until(sub { !processes_in_copy() }, timeout => 10)
	  ? () : processes_in_copy();
	is_deeply(\@left, [], "no PostgreSQL or listener process is left (run $runs)");
	ok(!-e "$copy/.run/pgdata/postmaster.pid", "the cluster shut down cleanly (run $runs)");
}

sub psql
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'psql', '-X', '-qtA', '-v', 'ON_ERROR_STOP=1', '-h', "$copy/.run",
			'-U', 'postgres', '-d', 'provision', '-c', $sql ],
		'>', \$out, '2>', \$err)
	  or die "psql <$sql> failed: $err";
	chomp $out;
	return $out;
}

# The README's example block: what make run prints, with a sample job id and
# the default address.
my $out;
my $readme = slurp_file("$root/README.md");
my ($readme_block) =
  $readme =~ /<!-- make-run-example -->\s*```sh\n(.*?)```\s*<!-- \/make-run-example -->/s;
ok($readme_block, 'the README has the make run example block');
$readme_block //= '';
like($readme_block, qr/^JOB_ID=[0-9a-f-]{36}$/m, 'it starts from a JOB_ID line');

# ---- another process on the port ---------------------------------------------
# It answers every request with 200, as another listener's /readyz would.
my $busy_port = PostgreSQL::Test::Cluster::get_free_port();
my $occupant = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $busy_port,
	Listen => 16, ReuseAddr => 1) or die "listen on $busy_port: $!";
my $occupant_pid = fork();
die "fork: $!" unless defined $occupant_pid;
if ($occupant_pid == 0)
{
	while (my $c = $occupant->accept)
	{
		my $req = '';
		while (defined(my $line = <$c>)) { last if $line =~ /^\r?\n$/; }
		print $c "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
		  . "Content-Length: 19\r\nConnection: close\r\n\r\n{\"status\":\"ready\"}\n";
		close $c;
	}
	POSIX::_exit(0);
}
close $occupant;
my ($pid, $log) = start_run(listen => "127.0.0.1:$busy_port");
ok(ProvisionTest::wait_until(sub { !alive($pid) }, timeout => 4 * $timeout),
	'make run exits when another process listens on its port');
isnt($?, 0, 'with a failure status');
$out = slurp_file($log);
like($out, qr/make run: another process already listens on 127\.0\.0\.1:$busy_port/,
	'saying that another process listens there');
unlike($out, qr/provision is serving|JOB_ID=/, 'without printing the serving banner');
unlike($out, qr/starting PostgreSQL/, 'before starting the cluster');
is_deeply([ processes_in_copy() ], [], 'leaving no process behind');
kill 'KILL', $occupant_pid;
waitpid($occupant_pid, 0);
$runs--;

# ---- run 1: fresh ------------------------------------------------------------
($pid, $log) = start_run();
ready_or_stop($pid, $log, 'make run serves: /readyz answers 200');
$out = slurp_file($log);
like($out, qr/make run: creating the cluster/, 'the first run creates the cluster');
like($out, qr/make run: creating a random secret/, 'and the secret');
like($out, qr/make run: no dispatcher: set PROVISION_GITHUB_REPO and PROVISION_GITHUB_TOKEN/,
	'without a repository and a token: no dispatcher, and it says so');
is($http->get("http://$listen/healthz")->{status}, 200, '/healthz answers 200');

my ($job) = $out =~ /^JOB_ID=([0-9a-f-]{36})$/m;
ok($job, 'make run prints the demo job id');
$job //= '';
my ($printed) = $out =~ /^(JOB_ID=.*?)\n\n/ms;
my $expected = $readme_block;
$expected =~ s/^JOB_ID=\S+$/JOB_ID=$job/m;
$expected =~ s/127\.0\.0\.1:8080/$listen/g;
chomp $expected;
is($printed, $expected, 'the printed example is the README example (job id and address aside)');

is(psql('SHOW listen_addresses'), '', 'the cluster takes no TCP port');
is(psql("SELECT extversion FROM pg_extension WHERE extname = 'provision'"),
	$ProvisionTest::EXTVERSION, 'database provision has the extension');
is(psql("SELECT status FROM provision.provisioning_jobs WHERE id = '$job'"),
	'pending', 'the demo job is open');
my $secret = slurp_file("$copy/.run/secret");
like($secret, qr/^[0-9a-f]{64}\n$/, '.run/secret is 32 random bytes in hex');
is((stat "$copy/.run/secret")[2] & 07777, 0600, '.run/secret is mode 0600');
my $sysid = psql('SELECT system_identifier FROM pg_control_system()');

# Paste the example as printed, from the checkout.
my ($pout, $perr) = ('', '');
IPC::Run::run([ 'sh', '-c', "cd '$copy' && set -e\n$printed\n" ],
	'>', \$pout, '2>', \$perr, IPC::Run::timeout($timeout));
is($?, 0, 'the printed example runs without error') or diag($perr);
my @responses = map { ProvisionTest::decode_json($_) } grep { /^\{/ } split /\n/, $pout;
is(scalar @responses, 2, 'two JSON responses: curl and provision-callback') or diag($pout);
is($responses[0]{job_status}, 'provisioning', 'the raw curl callback applied provisioning');
is($responses[1]{job_status}, 'running', 'the sender applied running');
is($responses[1]{agent_status}, 'active', 'and activated the agent');
is(psql("SELECT j.status || ' ' || a.status || ' ' || i.server_id || ' ' || host(i.server_ip) || ' ' || host(i.tailscale_ip)
           FROM provision.provisioning_jobs j
           JOIN provision.agents a ON a.id = j.agent_id
           JOIN provision.agent_instances i ON i.agent_id = a.id
          WHERE j.id = '$job'"),
	'running active 4711 203.0.113.10 100.64.0.10',
	'the database shows the job running, the agent active and its VM');

stop_run($pid, $log);

# ---- run 2: reuses the cluster and the secret; then crashes -----------------
($pid, $log) = start_run();
ready_or_stop($pid, $log, 'the second make run serves');
$out = slurp_file($log);
unlike($out, qr/creating the cluster|creating a random secret/,
	'the second run creates neither cluster nor secret');
is(slurp_file("$copy/.run/secret"), $secret, 'the secret is reused');
is(psql('SELECT system_identifier FROM pg_control_system()'), $sysid, 'the cluster is reused');
is(psql("SELECT status FROM provision.provisioning_jobs WHERE id = '$job'"),
	'running', 'the first run\'s data is still there');
my ($job2) = $out =~ /^JOB_ID=([0-9a-f-]{36})$/m;
isnt($job2 // $job, $job, 'a new open demo job is offered');
is(psql("SELECT count(*) FROM provision.agents WHERE name = 'demo'"), 1,
	'still one demo agent');
is(psql("SELECT count(DISTINCT agent_id) FROM provision.provisioning_jobs WHERE id IN ('$job', '$job2')"),
	1, 'the new job is the same agent\'s');

# A crash: everything killed at once, leaving a stale postmaster.pid.
my $pm = (split /\n/, slurp_file("$copy/.run/pgdata/postmaster.pid"))[0];
kill 'KILL', -$pid, $pm;
waitpid($pid, 0);
ok(ProvisionTest::wait_until(sub { !processes_in_copy() }), 'the crashed run is gone');
ok(-e "$copy/.run/pgdata/postmaster.pid", 'it left a stale postmaster.pid');

# ---- run 3: after the crash ---------------------------------------------------
($pid, $log) = start_run();
ready_or_stop($pid, $log, 'make run starts after a crash');
like(slurp_file($log), qr/removing stale lock files/, 'it removed the stale lock files');
is(psql('SELECT system_identifier FROM pg_control_system()'), $sysid, 'on the same cluster');

# A second make run in the same checkout must leave the first one alone.
my ($pid2, $log2) = start_run();
ok(ProvisionTest::wait_until(sub { !alive($pid2) }, timeout => 2 * $timeout),
	'a concurrent make run exits');
isnt($?, 0, 'with a failure status');
like(slurp_file($log2), qr/make run is already running in this checkout \(pid \d+\)/,
	'saying that make run is already running');
is($http->get("http://$listen/readyz")->{status}, 200, 'the first run still serves');
$runs--;    # stop_run's messages name the run being stopped
stop_run($pid, $log);

# ---- runs 4 and 5: background jobs of a script --------------------------------
# make keeps an ignored SIGINT ignored; SIGTERM to make reaches scripts/run.
($pid, $log) = start_run(background => 1);
ready_or_stop($pid, $log, 'make run started with SIGINT ignored serves');
stop_run($pid, $log, 'TERM', $pid);

# scripts/run itself takes SIGINT even when started with it ignored.
($pid, $log) = start_run(background => 1, command => ['scripts/run']);
ready_or_stop($pid, $log, 'scripts/run started with SIGINT ignored serves');
stop_run($pid, $log, 'INT', $pid);

# ---- run 6: with a repository and a token, a dispatcher too ---------------------
my $gh = FakeGitHub->new(tokens => [$DispatcherTest::TOKEN]);
($pid, $log) = start_run(env => {
	PROVISION_GITHUB_REPO  => 'acme/agents',
	PROVISION_GITHUB_TOKEN => $DispatcherTest::TOKEN,
	PROVISION_GITHUB_API   => $gh->url });
ready_or_stop($pid, $log, 'make run with a dispatcher serves');
like(slurp_file($log), qr{make run: dispatching open jobs to acme/agents \(workflow provision\.yml\)},
	'it says it dispatches');
my ($job4) = slurp_file($log) =~ /^JOB_ID=([0-9a-f-]{36})$/m;
ok(ProvisionTest::wait_until(sub {
		psql("SELECT workflow_run_id IS NOT NULL FROM provision.provisioning_jobs WHERE id = '$job4'") eq 't';
	}), 'the open demo job is dispatched and its run recorded');
my ($call) = $gh->requests(endpoint => 'dispatch');
is($call->{json}{inputs}{job_id}, $job4, 'GitHub got the demo job');
is(psql("SELECT count(*) FROM pg_roles WHERE rolname = 'provision_dispatcher' AND NOT rolsuper"),
	1, 'the dispatcher runs as a role of its own');
my ($listener_pid) = grep { /provision-listener/ } processes_in_copy();
($listener_pid) = split / /, $listener_pid // '';
unlike(slurp_file("/proc/$listener_pid/environ") // '', qr/\Q$DispatcherTest::TOKEN\E/,
	'the listener does not get the token');
stop_run($pid, $log);
like(slurp_file($log), qr/make run: dispatcher stopped/, 'the dispatcher stopped too');

done_testing();
