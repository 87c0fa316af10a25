
# The listener when database calls block: a request stuck on a row lock holds
# one pool connection and nothing else (other callbacks, /healthz and
# /metrics answer at once); with the whole pool stuck a callback gets 503 and
# Retry-After after --pool-wait; a call past --statement-timeout answers 503
# and records nothing; a serialization failure (40001) is retried and
# answered 200; on SIGTERM the listener refuses new connections but finishes
# the stuck request before it exits 0.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;

my $node = ProvisionTest::new_node('blocked');
my $l = ProvisionTest::start_listener(node => $node,
	args => [ '--pool', '2', '--pool-wait', '1s', '--statement-timeout', '4s' ]);

my @jobs = map { (ProvisionTest::new_job($node, status => 'provisioning'))[1] } 1 .. 4;
my ($ja, $jb, $jc, $jd) = @jobs;

# Number of listener backends waiting on a lock.
sub lock_waiters
{
	return ProvisionTest::query_scalar($node,
		"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = 'provision'");
}

sub wait_waiters
{
	my ($n) = @_;
	return ProvisionTest::wait_until(sub { lock_waiters() == $n }, timeout => 10);
}

sub lock_jobs
{
	my ($bg, @ids) = @_;
	$bg->query_safe('BEGIN');
	$bg->query_safe(
		'SELECT id FROM provision.provisioning_jobs WHERE id IN ('
		  . join(', ', map { ProvisionTest::quote_literal($_) } @ids) . ') FOR UPDATE');
}

sub heartbeat_clients
{
	my (@ids) = @_;
	return ProvisionTest::start_clients(scalar @ids, sub {
		my ($i) = @_;
		my $t0 = time();
		my $r = $l->callback({ job_id => $ids[$i], status => 'heartbeat' },
			delivery => "blocked-$ids[$i]-" . int($t0 * 1000), timeout => 20);
		return { status => $r->{status}, retry_after => $r->{headers}{'retry-after'},
			elapsed => time() - $t0 };
	});
}

my $bg = $node->background_psql('provision');

# --- one stuck request holds one connection only ---
lock_jobs($bg, $ja);
my $stuck = heartbeat_clients($ja);
ok(wait_waiters(1), 'one callback waits on the row lock');
my $t0 = time();
my $r = $l->callback({ job_id => $jb, status => 'heartbeat' }, timeout => 5);
is($r->{status}, 200, 'another job\'s callback is served by the other connection');
is($l->get('/healthz', timeout => 5)->{status}, 200, '/healthz answers');
my $m = $l->metrics;
cmp_ok(time() - $t0, '<', 2, 'all of that promptly (well before --statement-timeout 4s)');
is(ProvisionTest::metric_sum($m, 'provision_db_pool_in_use'), 1, 'pool_in_use shows the stuck connection');
$bg->query_safe('COMMIT');
my $res = ProvisionTest::finish_clients($stuck, timeout => 15);
is($res->[0]{status}, 200, 'the stuck callback completes with 200 once the lock is gone');

# --- the whole pool stuck: 503 after --pool-wait ---
lock_jobs($bg, $ja, $jc);
$stuck = heartbeat_clients($ja, $jc);
ok(wait_waiters(2), 'two callbacks wait on row locks (the whole pool)');
$t0 = time();
$r = $l->callback({ job_id => $jb, status => 'heartbeat' }, timeout => 10);
my $elapsed = time() - $t0;
is($r->{status}, 503, 'no free connection: 503') or diag explain $r;
like($r->{headers}{'retry-after'} // '', qr/^\d+$/, 'with Retry-After');
cmp_ok($elapsed, '>=', 0.9, 'after waiting about --pool-wait 1s');
cmp_ok($elapsed, '<', 3, 'and not much longer');
is($l->get('/healthz', timeout => 5)->{status}, 200, '/healthz still answers');
$bg->query_safe('COMMIT');
$res = ProvisionTest::finish_clients($stuck, timeout => 15);
is_deeply([ map { $_->{status} } @$res ], [ 200, 200 ], 'both stuck callbacks complete with 200');

# --- past --statement-timeout: 503, nothing recorded ---
lock_jobs($bg, $jd);
$t0 = time();
$r = $l->callback({ job_id => $jd, status => 'heartbeat' }, delivery => 'blocked-timeout', timeout => 15);
$elapsed = time() - $t0;
is($r->{status}, 503, 'statement timeout: 503') or diag explain $r;
like($r->{headers}{'retry-after'} // '', qr/^\d+$/, 'statement timeout: Retry-After');
cmp_ok($elapsed, '>=', 3.5, 'answered after --statement-timeout 4s');
cmp_ok($elapsed, '<', 8, 'and not much later');
$bg->query_safe('COMMIT');
ok(!ProvisionTest::delivery_row($node, 'blocked-timeout'), 'the timed-out delivery is not recorded');
is($l->callback({ job_id => $jd, status => 'heartbeat' }, delivery => 'blocked-timeout')->{status},
	200, 'its retry answers 200');

# --- serialization failure (40001): retried, answered 200 ---
# The listener runs READ COMMITTED, where row updates do not raise 40001,
# so a trigger on provision.events raises it for the first transaction
# that writes an event (a sequence counts the attempts: nextval is not
# rolled back).  The listener retries with a new transaction, which
# succeeds.
{
	my $role = ProvisionTest::create_listener_role($node, 'serial');
	my $ls = ProvisionTest::start_listener(node => $node, user => $role, args => [ '--pool', '1' ]);
	my (undef, $job) = ProvisionTest::new_job($node, status => 'dispatched');
	$node->safe_psql('provision', q{
		CREATE SEQUENCE public.serial_attempts;
		GRANT USAGE ON SEQUENCE public.serial_attempts TO PUBLIC;
		CREATE FUNCTION public.fail_first_event() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF pg_catalog.nextval('public.serial_attempts') = 1 THEN
				RAISE EXCEPTION 'could not serialize access (injected)' USING ERRCODE = '40001';
			END IF;
			RETURN NULL;
		END $$;
		CREATE TRIGGER fail_first_event AFTER INSERT ON provision.events
			FOR EACH ROW EXECUTE FUNCTION public.fail_first_event();
	});
	my $x = $ls->callback({ job_id => $job, status => 'provisioning' },
		delivery => 'blocked-serial', timeout => 20);
	is($x->{status}, 200, '40001: the callback is retried and answers 200') or diag explain $x;
	ok($x->{json}{applied} && !$x->{json}{duplicate}, '40001: applied by the retry');
	is(ProvisionTest::query_scalar($node, 'SELECT last_value FROM public.serial_attempts'), 2,
		'40001: the first attempt failed, the second wrote the event');
	is(ProvisionTest::metric_sum($ls->metrics, 'provision_db_errors_total'), 1,
		'40001: the failed attempt is counted as a database error');
	is(ProvisionTest::job_row($node, $job)->{status}, 'provisioning', '40001: job moved once');
	is(scalar(grep { ($_->{to_status} // '') eq 'provisioning' }
			@{ ProvisionTest::events_for_job($node, $job) }),
		1, '40001: one event into provisioning');
	is($ls->stop, 0, '40001: listener exits 0');
	$node->safe_psql('provision', 'DROP TRIGGER fail_first_event ON provision.events');
}

# --- SIGTERM with a request in flight ---
lock_jobs($bg, $ja);
$stuck = heartbeat_clients($ja);
ok(wait_waiters(1), 'SIGTERM: a callback is in flight');
$l->signal('TERM');
sleep(1);
ok($l->running, 'SIGTERM: the listener waits for the in-flight request');
my $refused = $l->get('/healthz', timeout => 2);
isnt($refused->{status}, 200, 'SIGTERM: new requests are not served');
$bg->query_safe('COMMIT');
$res = ProvisionTest::finish_clients($stuck, timeout => 15);
is($res->[0]{status}, 200, 'SIGTERM: the in-flight request completes with 200');
is($l->wait_exit(15), 0, 'SIGTERM: then the listener exits 0');

$bg->quit;

done_testing();
