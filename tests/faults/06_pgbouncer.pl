
# The listener behind PgBouncer in transaction pooling mode (started here on
# a Unix socket, auth_type trust with a userlist): both ways a listener
# connection falls back to unnamed statements happen and are logged (a call
# whose prepared statement is not on the server connection it lands on,
# 26000, is sent again and answered; a PREPARE that lands on a server
# connection which has the statement, 42P05), the HTTP suite passes through
# it (/readyz, applied, heartbeat, duplicate, 409, 404, 400, 401), and
# parallel callbacks and a burst of identical deliveries keep their
# exactly-once accounting while six listener connections share two server
# connections. PgBouncer missing fails the test: make test installs it
# (scripts/deps test).

use strict;
use warnings;

use FindBin;
use IPC::Run ();
use lib $FindBin::RealBin;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;
use FaultLoad;

my $pgbouncer = '/usr/sbin/pgbouncer';
if (!-x $pgbouncer)
{
	fail("PgBouncer installed ($pgbouncer; scripts/deps test installs Debian's pgbouncer)");
	done_testing();
	exit;
}

my $node = ProvisionTest::new_node('bouncer');
my $role = ProvisionTest::create_listener_role($node);
# A session setting does not stay with a server connection under
# transaction pooling: the timeout belongs on the role.
$node->safe_psql('provision', "ALTER ROLE $role SET statement_timeout = '5s'");
# Its sessions start SERIALIZABLE; the listener's transactions must still
# run at READ COMMITTED through the pooler, which a trigger records.
$node->safe_psql('provision', qq{
	ALTER ROLE $role SET default_transaction_isolation = 'serializable';
	CREATE TABLE public.isolation_seen (who name NOT NULL, level text NOT NULL);
	GRANT INSERT ON public.isolation_seen TO PUBLIC;
	CREATE FUNCTION public.record_isolation() RETURNS trigger LANGUAGE plpgsql AS \$\$
	BEGIN
		INSERT INTO public.isolation_seen
			VALUES (session_user, pg_catalog.current_setting('transaction_isolation'));
		RETURN NULL;
	END \$\$;
	CREATE TRIGGER record_isolation AFTER INSERT ON provision.events
		FOR EACH ROW EXECUTE FUNCTION public.record_isolation();
});

my $dir = PostgreSQL::Test::Utils::tempdir_short();
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $log = "$PostgreSQL::Test::Utils::log_path/06_pgbouncer_pgbouncer.log";
PostgreSQL::Test::Utils::append_to_file("$dir/userlist.txt", qq{"$role" ""\n});
PostgreSQL::Test::Utils::append_to_file(
	"$dir/pgbouncer.ini", sprintf(<<'EOF', $node->host, $node->port, $port, $dir, $dir, $log));
[databases]
provision = host=%s port=%d dbname=provision

[pgbouncer]
listen_addr =
listen_port = %d
unix_socket_dir = %s
auth_type = trust
auth_file = %s/userlist.txt
pool_mode = transaction
default_pool_size = 2
max_client_conn = 50
server_reset_query =
logfile = %s
EOF

my $bouncer_pid = fork();
die "fork: $!" unless defined $bouncer_pid;
if ($bouncer_pid == 0)
{
	open(STDIN, '<', '/dev/null');
	open(STDOUT, '>>', "$log.stdout") or POSIX::_exit(127);
	open(STDERR, '>&', \*STDOUT) or POSIX::_exit(127);
	exec($pgbouncer, "$dir/pgbouncer.ini") or POSIX::_exit(127);
}
END
{
	local $?;
	if ($bouncer_pid)
	{
		kill 'TERM', $bouncer_pid;
		waitpid($bouncer_pid, 0);
	}
}

my $via = "host=$dir port=$port dbname=provision user=$role";
ok(ProvisionTest::wait_until(sub {
	my $out = `psql -XAtq -d "$via" -c 'SELECT 1' 2>/dev/null`;
	return ($out // '') =~ /^1$/m;
}, interval => 0.2), 'PgBouncer accepts connections');

is(`psql -XAtq -d "$via" -c 'SHOW default_transaction_isolation' 2>&1`, "serializable\n",
	'sessions through PgBouncer start at SERIALIZABLE');

# The call-time fallback, made certain: PgBouncer has one server connection
# (the one the check above opened), the listener's only connection prepares
# there, and a client holds that server connection in a transaction, so
# the next call runs on a second server connection, where the statement
# does not exist.
my $l1 = ProvisionTest::start_listener(database => $via, args => [ '--pool', '1' ]);
is($l1->get('/readyz')->{status}, 200, 'one listener connection: /readyz 200 through PgBouncer');
unlike($l1->log_content, qr/preparing provision_handle_callback failed/,
	'one listener connection: its PREPARE succeeded');
my ($pin_in, $pin_out, $pin_err) = ('', '', '');
my $pin_timer = IPC::Run::timeout(ProvisionTest::timeout());
my $pin = IPC::Run::start([ 'psql', '-XAtq', '-d', $via, '-f', '-' ],
	'<', \$pin_in, '>', \$pin_out, '2>', \$pin_err, $pin_timer);
$pin_in .= "BEGIN;\nSELECT 'held', count(*) FROM pg_prepared_statements"
  . " WHERE name = 'provision_handle_callback';\n";
$pin->pump until $pin_out =~ /^held\|\d+$/m || $pin_timer->is_expired;
like($pin_out, qr/^held\|1$/m, 'a client holds the server connection with the prepared statement');
my (undef, $pjob) = ProvisionTest::new_job($node, status => 'dispatched');
my $from = $l1->log_size;
my $r = $l1->callback({ job_id => $pjob, status => 'provisioning' }, delivery => 'pinned-1');
is($r->{status}, 200, 'a call on a server connection without the statement: 200');
ok($r->{json}{applied}, 'a call on a server connection without the statement: applied');
like($l1->log_content($from),
	qr/prepared statement provision_handle_callback failed \(SQLSTATE 26000\); this connection now uses unnamed statements/,
	'the call was sent again as an unnamed statement (26000 logged)');
is(ProvisionTest::job_row($node, $pjob)->{status}, 'provisioning', 'the job moved');
$pin_in .= "COMMIT;\n";
$pin->finish;
is($l1->stop, 0, 'one listener connection: exits 0 on SIGTERM');

my $l = ProvisionTest::start_listener(database => $via, args => [ '--pool', '6' ]);

$r = $l->get('/readyz');
is($r->{status}, 200, '/readyz 200 through PgBouncer');

# Six listener connections prepare the callback statement over two server
# connections: at least four PREPAREs find it already there (42P05), and
# those connections fall back to unnamed statements.
my $fallbacks = () = $l->log_content =~
  /preparing provision_handle_callback failed \(SQLSTATE 42P05: [^)]*\); this connection uses unnamed statements/g;
cmp_ok($fallbacks, '>=', 4, 'connections whose PREPARE PgBouncer routed to a prepared server connection use unnamed statements');

my ($agent, $job) = ProvisionTest::new_job($node, status => 'dispatched');
$r = $l->callback({ job_id => $job, status => 'provisioning' }, delivery => 'suite-1');
is($r->{status}, 200, 'provisioning: 200');
ok($r->{json}{applied} && !$r->{json}{duplicate}, 'provisioning: applied');
is($r->{json}{job_status}, 'provisioning', 'provisioning: job status in the answer');

$r = $l->callback({ job_id => $job, status => 'heartbeat' }, scheme => 'standard');
is($r->{status}, 200, 'heartbeat: 200');
is($r->{json}{action}, 'heartbeat', 'heartbeat: action');

my $running = { job_id => $job, status => 'running', server_id => 4242,
	server_ip => '203.0.113.7', tailscale_ip => '100.64.1.7' };
$r = $l->callback($running, delivery => 'suite-2');
is($r->{status}, 200, 'running: 200');
is($r->{json}{job_status}, 'running', 'running: job running');
is($r->{json}{agent_status}, 'active', 'running: agent active');
my $inst = ProvisionTest::instance_row($node, $agent);
is($inst->{server_id}, '4242', 'running: instance stored');
is($inst->{server_ip}, '203.0.113.7', 'running: with its address');

$r = $l->callback($running, delivery => 'suite-2');
is($r->{status}, 200, 'duplicate: 200');
ok($r->{json}{duplicate}, 'duplicate: reported as such');

$r = $l->callback({ job_id => $job, status => 'failed', error => 'late' }, delivery => 'suite-3');
is($r->{status}, 409, 'refused transition: 409');
is($r->{json}{status}, 'running', '409: current status');
is($r->{json}{job_id}, $job, '409: job id');

$r = $l->callback({ job_id => '00000000-0000-4000-8000-000000000001', status => 'provisioning' });
is($r->{status}, 404, 'unknown job: 404');

$r = $l->callback({ job_id => $job, status => 'running', server_id => 'x',
	server_ip => 'not-an-ip', tailscale_ip => '100.64.1.8' });
is($r->{status}, 400, 'invalid field (from the database): 400');
like($r->{json}{error} // '', qr/server_ip/, '400: names the field');

$r = $l->callback('{"job_id": ');
is($r->{status}, 400, 'body not JSON: 400');

$r = $l->callback({ job_id => $job, status => 'heartbeat' }, signature => 'sha256=' . ('0' x 64));
is($r->{status}, 401, 'bad signature: 401');

is(ProvisionTest::query_scalar($node,
	"SELECT string_agg(kind, ',' ORDER BY id) FROM provision.events WHERE job_id = '$job'"),
	'enqueued,dispatched,status,completed', 'the suite job moved once per state change');
ok(!ProvisionTest::delivery_row($node, 'suite-3'), 'the refused delivery is not recorded');

# Parallel load: eight senders over six listener connections, two server
# connections.
my $tag = 'pgb';
my $jobs = FaultLoad::create_jobs($node, $tag, 120);
my $load = FaultLoad::start_senders(8, $jobs, [$l], tag => $tag, deadline => 60);
my $max_backends = 0;
my $t_end = time() + 3;
while (time() < $t_end)
{
	my $n = ProvisionTest::query_scalar($node,
		"SELECT count(*) FROM pg_stat_activity WHERE usename = '$role'");
	$max_backends = $n if $n > $max_backends;
	sleep(0.1);
}
my $records = FaultLoad::wait_senders($load, 120);
is($load->{lost}, 0, 'every sender finished and reported');
my $fig = FaultLoad::check_accounting($node, $tag, $records, allowed => []);
cmp_ok($max_backends, '<=', 2, 'the database saw at most PgBouncer\'s two server connections');

# A burst of identical deliveries through the pooler.
my (undef, $bjob) = ProvisionTest::new_job($node);
my $d = FaultLoad::plan_for('pgbburst', $bjob, 1)->[2];
my $start = time() + 0.5;
my $res = ProvisionTest::fork_clients(12, sub {
	sleep($start - time()) if $start > time();
	return FaultLoad::deliver($l, $d, deadline => 30);
}, timeout => 60);
is(scalar(grep { $_ && $_->{final} == 200 } @$res), 12, 'burst: all 12 answered 200');
is(scalar(grep { $_ && $_->{final} == 200 && !$_->{duplicate} } @$res), 1, 'burst: one applied, the rest duplicates');
is(ProvisionTest::query_scalar($node,
	"SELECT count(*) FROM provision.events WHERE job_id = '$bjob' AND kind = 'completed'"),
	1, 'burst: one completed event');

is(ProvisionTest::query_scalar($node,
	"SELECT string_agg(DISTINCT level, ',') FROM public.isolation_seen WHERE who = '$role'"),
	'read committed', 'every callback through PgBouncer ran at READ COMMITTED');

is($l->stop, 0, 'the listener exits 0 on SIGTERM');
note(sprintf('pgbouncer figures: suite 12 requests; load: requests %d, 200s %d, duplicates %d, retries %d, '
	  . 'rows %d, events %d, server connections seen %d',
	$fig->{requests}, $fig->{ok}, $fig->{duplicates}, $fig->{retries}, $fig->{rows},
	$fig->{events}, $max_backends));

done_testing();
