
# Automatic failover with pg_auto_failover: a monitor and two nodes run by
# pg_autoctl on 127.0.0.1, the monitor with the tuned settings of
# docs/high-availability.md, and one listener given both nodes in one
# conninfo with target_session_attrs=read-write.  Under a load of signed
# callbacks the primary's machine "dies": its pg_autoctl, its Postgres and
# their children are killed with SIGKILL, so nothing restarts them, and the
# monitor has to promote the standby on its own.  Then:
#
# - every callback answered 200 is on the new primary, no effect is applied
#   twice (FaultLoad's accounting);
# - the same listener process served throughout;
# - no 503 came later than 2 s after the new primary first accepted a write
#   (a probe inserting into it directly, every 50 ms), and the listener
#   logged every host's reason for a failed connection on one line;
# - the old primary, its pg_autoctl started again, rejoins as a synchronous
#   standby;
# - a second failover, back to it, passes the same checks, and the
#   callbacks of the first one are still all there.
#
# The figures of each failover (kill to first write, the 503 window, the
# counts) are printed.  Skipped only when pg_autoctl is not installed
# (Debian packages pg-auto-failover-cli and postgresql-15-auto-failover).

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use IPC::Run ();
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;
use FaultLoad;

my $pg_config = $ENV{PG_CONFIG} || 'pg_config';
chomp(my $bindir = `$pg_config --bindir`);
chomp(my $sharedir = `$pg_config --sharedir`);
die "$pg_config --bindir failed" unless $bindir && -d $bindir;

# The pg_autoctl next to the PostgreSQL under test, else the one on PATH
# (Debian installs it in /usr/bin); it runs that PostgreSQL's pg_ctl.
my ($autoctl) = grep { -x $_ } map { "$_/pg_autoctl" } $bindir, split(/:/, $ENV{PATH} // '');
plan skip_all => "pg_autoctl not found in $bindir or on PATH "
  . '(Debian packages pg-auto-failover-cli and postgresql-15-auto-failover)'
  unless $autoctl;
ok(-f "$sharedir/extension/pgautofailover.control",
	"the monitor's extension pgautofailover is installed in $sharedir")
  or die "pgautofailover.control missing: install postgresql-15-auto-failover for $pg_config";
$ENV{PATH} = "$bindir:$ENV{PATH}";

# The monitor settings under test: a failover decided in about 3 s and the
# old primary given 3 s to demote (defaults 20 s and 30 s).
my @monitor_settings = (
	'pgautofailover.health_check_period = 1000',
	'pgautofailover.health_check_timeout = 1000',
	'pgautofailover.health_check_max_retries = 1',
	'pgautofailover.health_check_retry_delay = 500',
	'pgautofailover.node_considered_unhealthy_timeout = 3000',
	'pgautofailover.primary_demote_timeout = 3000');

my $max_503_after_write = 2.0;
my $jobs_per_round = 6000;
my $load_after_write = 3;

# Everything pg_autoctl keeps (configuration, state, pid files, sockets)
# stays in the test's directory.
my $base = PostgreSQL::Test::Utils::tempdir_short();
my $sockdir = "$base/sock";
mkdir $sockdir or die "$sockdir: $!";
my %autoctl_env = (
	XDG_CONFIG_HOME => "$base/config",
	XDG_DATA_HOME   => "$base/data",
	XDG_RUNTIME_DIR => "$base/run",
	PGHOST          => $sockdir,
	PG_CONFIG       => "$bindir/pg_config");
mkdir $_ or die "$_: $!" for @autoctl_env{qw(XDG_CONFIG_HOME XDG_DATA_HOME XDG_RUNTIME_DIR)};
delete @ENV{qw(PGPORT PGDATA PGDATABASE PGUSER PGSERVICE PGOPTIONS)};

my $log_prefix = "$PostgreSQL::Test::Utils::log_path/09_auto_failover";

# A node of the formation: psql and safe_psql as PostgreSQL::Test::Cluster
# has them, which is all FaultLoad and ProvisionTest ask of a node.
{

	package AutoNode;

	sub new { my ($class, %a) = @_; return bless {%a}, $class; }
	sub name   { return $_[0]{name}; }
	sub port   { return $_[0]{port}; }
	sub pgdata { return $_[0]{pgdata}; }

	sub psql
	{
		my ($self, $db, $sql, %opts) = @_;
		my ($out, $err) = ('', '');
		my $ok = eval {
			IPC::Run::run(
				[
					'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1',
					'-p', $self->{port}, '-d', $db, '-f', '-'
				],
				'<', \$sql, '>', \$out, '2>', \$err,
				IPC::Run::timeout($opts{timeout} // 60));
		};
		my $rc = $ok ? 0 : $@ ? 124 : ($? >> 8) || 1;
		chomp $out;
		return wantarray ? ($rc, $out, $err) : $rc;
	}

	sub safe_psql
	{
		my ($self, $db, $sql) = @_;
		my ($rc, $out, $err) = $self->psql($db, $sql);
		die "psql on $self->{name} failed ($rc): $err\nstatement: $sql" if $rc != 0;
		return $out;
	}
}

my $monitor = AutoNode->new(name => 'monitor', port => PostgreSQL::Test::Cluster::get_free_port(),
	pgdata => "$base/monitor");
my @nodes = map {
	AutoNode->new(name => $_, port => PostgreSQL::Test::Cluster::get_free_port(),
		pgdata => "$base/$_")
} qw(node1 node2);
my ($n1, $n2) = @nodes;
my $monitor_uri = sprintf('postgres://autoctl_node@127.0.0.1:%d/pg_auto_failover?sslmode=disable',
	$monitor->port);

# pg_autoctl run of each node, by name: the pid, which is also its process
# group (setsid), so that one kill reaches pg_autoctl, its services and the
# postmaster.
my %keepers;

END
{
	my $rc = $?;
	for my $pid (values %keepers)
	{
		kill 'TERM', -$pid;
	}
	my $deadline = time() + 60;
	for my $pid (values %keepers)
	{
		sleep(0.1) while waitpid($pid, POSIX::WNOHANG()) == 0 && time() < $deadline;
		if (kill 0, $pid)
		{
			kill 'KILL', -$pid;
			waitpid($pid, 0);
		}
	}
	$? = $rc;
}

sub autoctl
{
	my ($what, @args) = @_;
	local @ENV{ keys %autoctl_env } = values %autoctl_env;
	my $log = "${log_prefix}_$what.log";
	my $t0 = time();
	my $ok = IPC::Run::run([ $autoctl, @args ], '<', '/dev/null', '>>', $log, '2>&1',
		IPC::Run::timeout(300));
	note(sprintf('pg_autoctl %s %s: %s in %.1f s (log %s)',
		$args[0], $args[1] // '', $ok ? 'ok' : 'failed', time() - $t0, $log));
	die "pg_autoctl @args[0, 1] failed, see $log" unless $ok;
	return;
}

sub start_keeper
{
	my ($node) = @_;
	my $log = "${log_prefix}_$node->{name}.log";
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		POSIX::setsid();
		@ENV{ keys %autoctl_env } = values %autoctl_env;
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>>', $log) or POSIX::_exit(127);
		open(STDERR, '>&', \*STDOUT) or POSIX::_exit(127);
		exec($autoctl, 'run', '--pgdata', $node->pgdata) or POSIX::_exit(127);
	}
	$keepers{ $node->name } = $pid;
	note("pg_autoctl run for $node->{name}: pid $pid, log $log");
	return;
}

# The node's machine dies: SIGKILL to pg_autoctl and everything in its
# process group, the postmaster among them; the backends follow their
# postmaster out.  (pg_ctl stop alone would be undone by pg_autoctl in a
# fraction of a second.)
sub kill_node
{
	my ($node) = @_;
	my $pid = delete $keepers{ $node->name } or die "no pg_autoctl running for $node->{name}";
	open(my $fh, '<', $node->pgdata . '/postmaster.pid') or die "postmaster.pid: $!";
	my $postmaster = <$fh> + 0;
	close $fh;
	kill 'KILL', -$pid;
	kill 'KILL', $postmaster;
	waitpid($pid, 0);
	return;
}

# The postmaster of a killed node and its last backend are gone, so that a
# new one can start on its data directory.
sub wait_node_gone
{
	my ($node) = @_;
	return ProvisionTest::wait_until(
		sub {
			open(my $fh, '<', $node->pgdata . '/postmaster.pid') or return 1;
			my $pm = <$fh> + 0;
			return 0 if kill 0, $pm;
			# backends hold the node's port open until they exit
			my ($rc) = $node->psql('postgres', 'SELECT 1', timeout => 5);
			return $rc != 0;
		},
		timeout => 30, interval => 0.2);
}

sub wait_accepting
{
	my ($node) = @_;
	return ProvisionTest::wait_until(sub { ($node->psql('postgres', 'SELECT 1', timeout => 5))[0] == 0 },
		timeout => 60, interval => 0.2);
}

# { name => [reported state, goal state] } from the monitor.
sub states
{
	my ($rc, $out) = $monitor->psql('pg_auto_failover',
		"SELECT nodename, reportedstate, goalstate FROM pgautofailover.node ORDER BY nodeid");
	return {} if $rc != 0;
	return { map { my ($n, $r, $g) = split /\|/; ($n => [ $r, $g ]) } split /\n/, $out };
}

# Waits until every named node reports the goal it was given and that goal
# is one of the wanted states (a regex).
sub wait_states
{
	my ($timeout, %want) = @_;
	my $s;
	my $ok = ProvisionTest::wait_until(
		sub {
			$s = states();
			for my $n (keys %want)
			{
				my ($r, $g) = @{ $s->{$n} // [ '', '' ] };
				return 0 unless $r eq $g && $r =~ /^(?:$want{$n})$/;
			}
			return 1;
		},
		timeout => $timeout, interval => 0.2);
	note('states: ' . join(', ', map { "$_ $s->{$_}[0]/$s->{$_}[1]" } sort keys %$s)) unless $ok;
	return $ok;
}

# The monitor's events since $t0 (epoch seconds), as [seconds after $t0,
# node, reported, goal, description].
sub events_since
{
	my ($t0) = @_;
	my $out = $monitor->safe_psql('pg_auto_failover', sprintf(<<'EOF', $t0, $t0));
SELECT extract(epoch FROM eventtime) - %.6f, nodename, reportedstate, goalstate, description
FROM pgautofailover.event
WHERE eventtime >= to_timestamp(%.6f) ORDER BY eventid
EOF
	return [ map { [ split /\|/, $_, 5 ] } split /\n/, $out ];
}

# A client writing to the standby directly, every 50 ms, until one INSERT
# commits: when the new primary first accepts a write (epoch seconds, when
# the commit was answered).
sub start_probe
{
	my ($node, $tag) = @_;
	return ProvisionTest::start_clients(
		1,
		sub {
			my $deadline = time() + 120;
			my $tries = 0;
			while (time() < $deadline)
			{
				$tries++;
				my ($rc) = $node->psql('provision',
					"INSERT INTO public.ha_probe (round) VALUES ('$tag')", timeout => 2);
				return { t => time(), tries => $tries } if $rc == 0;
				sleep(0.05);
			}
			return { t => undef, tries => $tries };
		});
}

# --- the formation: a monitor, then node1, then node2 as its standby ---

# Each data directory is made here, not by pg_autoctl, so that it listens
# on 127.0.0.1 and the test's socket directory from its first start; node2
# is a copy of node1 (pg_basebackup) and inherits the same settings.  The
# processes are killed rather than the machine, so the page cache survives
# and fsync is not needed.
my $node_conf = <<"EOF";
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sockdir'
fsync = off
max_connections = 60
EOF
for my $n ($monitor, $n1)
{
	IPC::Run::run([ 'initdb', '-D', $n->pgdata, '-A', 'trust', '--no-sync' ],
		'>', "${log_prefix}_initdb_$n->{name}.log", '2>&1')
	  or die "initdb $n->{name} failed";
	PostgreSQL::Test::Utils::append_to_file($n->pgdata . '/postgresql.conf', $node_conf);
}
PostgreSQL::Test::Utils::append_to_file("$base/monitor/postgresql.conf",
	join("\n", @monitor_settings) . "\n");

my $t_setup = time();
autoctl('monitor', 'create', 'monitor', '--pgdata', $monitor->pgdata, '--pgport', $monitor->port,
	'--hostname', '127.0.0.1', '--listen', '127.0.0.1', '--auth', 'trust', '--no-ssl',
	'--pgctl', "$bindir/pg_ctl");
start_keeper($monitor);
ok(wait_accepting($monitor), 'the monitor is up');
is($monitor->safe_psql('pg_auto_failover',
		"SELECT current_setting('pgautofailover.primary_demote_timeout')"),
	'3s', 'the monitor runs with the tuned settings');

my @node_args = ('--hostname', '127.0.0.1', '--listen', '127.0.0.1', '--dbname', 'provision',
	'--auth', 'trust', '--no-ssl', '--monitor', $monitor_uri, '--pgctl', "$bindir/pg_ctl");
autoctl('node1', 'create', 'postgres', '--pgdata', $n1->pgdata, '--pgport', $n1->port,
	'--name', 'node1', @node_args);
start_keeper($n1);
ok(wait_states(60, node1 => 'single'), 'node1 is registered, a single primary');
ok(wait_accepting($n1), 'node1 accepts connections');

$n1->safe_psql('provision', 'CREATE EXTENSION provision');
$n1->safe_psql('provision', 'CREATE TABLE public.ha_probe (round text, at timestamptz DEFAULT now())');
my $role = ProvisionTest::create_listener_role($n1);
# Few dirty buffers left, so the base backup's checkpoint is quick.
$n1->safe_psql('postgres', 'CHECKPOINT');

autoctl('node2', 'create', 'postgres', '--pgdata', $n2->pgdata, '--pgport', $n2->port,
	'--name', 'node2', @node_args);
start_keeper($n2);
ok(wait_states(120, node1 => 'primary', node2 => 'secondary'),
	'node2 follows node1 as a secondary');
is($n1->safe_psql('postgres', 'SELECT sync_state FROM pg_catalog.pg_stat_replication'),
	'quorum', 'node1 replicates synchronously to node2 (ANY 1)');
diag(sprintf('formation set up in %.1f s', time() - $t_setup));

my $conninfo = sprintf(
	'host=127.0.0.1,127.0.0.1 port=%d,%d dbname=provision user=%s '
	  . 'target_session_attrs=read-write connect_timeout=2',
	$n1->port, $n2->port, $role);
my $l = ProvisionTest::start_listener(database => $conninfo, args => [ '--pool', '4' ]);
my $pid = $l->pid;

# One failover under load, from $from to $to; returns its figures.
sub failover
{
	my ($round, $from, $to) = @_;
	my $tag = "afo$round";
	my $what = "failover $round ($from->{name} -> $to->{name})";

	my $jobs = FaultLoad::create_jobs($from, $tag, $jobs_per_round);
	my $load = FaultLoad::start_senders(4, $jobs, [$l], tag => $tag, deadline => 90);
	my $before = FaultLoad::wait_delivered($from, $tag, 150, 60);
	cmp_ok($before, '>=', 150, "$what: load is flowing before the failover");

	my $probe = start_probe($to, $tag);
	my $t_kill = time();
	kill_node($from);
	ok(wait_states(90, $to->name => 'wait_primary|primary'), "$what: $to->{name} is promoted");
	my $p = ProvisionTest::finish_clients($probe, timeout => 120)->[0] // {};
	ok(defined $p->{t}, "$what: the new primary accepts writes") or $p->{t} = time();

	# Load goes on for a while after the first write, so that a pool
	# connection still backing off would be met.
	my $c = FaultLoad::delivered_count($to, $tag) // 0;
	sleep(0.1) while time() < $p->{t} + $load_after_write;
	my $later = FaultLoad::wait_delivered($to, $tag, $c + 300, 60);
	cmp_ok($later, '>=', $c + 300, "$what: callbacks are applied on the new primary");

	FaultLoad::stop_senders($load);
	my $records = FaultLoad::wait_senders($load, 150);
	is($load->{lost}, 0, "$what: every sender finished and reported");
	ok($l->running, "$what: the listener is running");
	is($l->pid, $pid, "$what: the same listener process served throughout");

	my $fig = FaultLoad::check_accounting($to, $tag, $records, allowed => [503]);

	my @bad = sort { $a <=> $b }
	  map {
		my $r = $_;
		map { $r->{at}[$_] } grep { $r->{codes}[$_] != 200 } 0 .. $#{ $r->{codes} }
	  } @$records;
	cmp_ok(scalar(@bad), '>', 0, "$what: the failover was felt (some callbacks answered 503)");
	@bad = ($t_kill) unless @bad;
	my $after_write = $bad[-1] - $p->{t};
	cmp_ok($after_write, '<=', $max_503_after_write,
		"$what: no 503 later than $max_503_after_write s after the new primary first accepted a write");

	my %ev;
	for my $e (@{ events_since($t_kill) })
	{
		my ($s, $node, $reported, $goal, $desc) = @$e;
		note(sprintf('  monitor +%5.2f s %s %s -> %s: %s', $s, $node, $reported, $goal, $desc));
		$ev{unhealthy} //= $s if $node eq $from->name && $desc =~ /unhealthy/;
		$ev{promoted}  //= $s if $node eq $to->name   && $reported eq 'stop_replication';
		$ev{writable}  //= $s if $node eq $to->name   && $reported eq 'wait_primary';
	}
	my %f = (
		write => $p->{t} - $t_kill,
		first_503 => $bad[0] - $t_kill,
		last_503 => $bad[-1] - $t_kill,
		after_write => $after_write,
		n_503 => scalar(@bad),
		%$fig);
	diag(sprintf(
		"%s: first write on the new primary %.2f s after the kill (monitor: unhealthy +%.1f s, "
		  . "promoted +%.1f s, wait_primary +%.1f s); 503s from +%.2f to +%.2f s, the last %.2f s "
		  . "after the first write; %d callbacks answered 200 (applied %d, duplicates %d) in %.1f s "
		  . "of load (%.0f a second outside the 503 window), %d answers 503; %d deliveries recorded "
		  . "on the new primary, %d events for %d jobs; listener pid %d",
		$what, $f{write}, $ev{unhealthy} // -1, $ev{promoted} // -1, $ev{writable} // -1,
		$f{first_503}, $f{last_503}, $f{after_write}, $fig->{ok}, $fig->{applied},
		$fig->{duplicates}, $load->{elapsed},
		$fig->{ok} / ($load->{elapsed} - ($f{last_503} - $f{first_503})), $f{n_503},
		$fig->{rows}, $fig->{events} // 0, $fig->{jobs}, $pid));
	return \%f;
}

my $f1 = failover(1, $n1, $n2);

# --- the old primary comes back and rejoins as a standby ---
ok(wait_node_gone($n1), 'node1 is down for good');
my $t_rejoin = time();
start_keeper($n1);
ok(wait_states(180, node1 => 'secondary', node2 => 'primary'),
	'node1, started again, rejoins as a secondary of node2');
is($n2->safe_psql('postgres', 'SELECT sync_state FROM pg_catalog.pg_stat_replication'),
	'quorum', 'node2 replicates synchronously to node1');
diag(sprintf('node1 rejoined as a standby %.1f s after its pg_autoctl started', time() - $t_rejoin));

my $f2 = failover(2, $n2, $n1);

is(FaultLoad::delivered_count($n1, 'afo1'), $f1->{rows},
	'every callback of the first failover is still there after the second');

# With both nodes refusing (one down, the other read-only), every host's
# reason is in the log, on one line.
my ($p1, $p2) = ($n1->port, $n2->port);
my @failed = grep { /database connection failed/ } split /\n/, $l->log_content;
ok((grep { /port $p1 failed: .*port $p2 failed: / } @failed),
	'a failed connection logs every host\'s reason on one line')
  or diag(join("\n", @failed[ 0 .. ($#failed < 4 ? $#failed : 4) ]));
note(sprintf('listener: %d reconnects',
	ProvisionTest::metric_sum($l->metrics, 'provision_db_reconnects_total') // 0));
is($l->stop, 0, 'the listener exits 0');

done_testing();
