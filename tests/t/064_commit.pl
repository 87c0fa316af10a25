
# Never a 2xx unless the transaction committed.  A deferred constraint
# trigger a DBA added to provision.events fails at COMMIT, after
# handle_callback has already returned its result: with 40001 (a
# serialization failure at commit) the listener retries and answers 503,
# with any other SQLSTATE 500; in both cases nothing is recorded, and the
# sender's retry is applied once the trigger is gone.  The listener's
# transactions run at READ COMMITTED whatever default the role or the
# database sets (a trigger records the level each callback ran at), and the
# answers are the same as under the server's own default.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();
use ProvisionTest;

my $node = ProvisionTest::new_node('commit');
my $role = ProvisionTest::create_listener_role($node);

# One connection, so every call below runs on the same session: a failed
# transaction must leave it usable for the next request.
my $l = ProvisionTest::start_listener(node => $node, user => $role, args => [ '--pool', '1' ]);

$node->safe_psql('provision', q{
	CREATE FUNCTION public.fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		RAISE EXCEPTION 'injected failure at commit' USING ERRCODE = TG_ARGV[0];
	END $$;
});

sub add_commit_trigger
{
	my ($sqlstate) = @_;
	$node->safe_psql('provision', qq{
		CREATE CONSTRAINT TRIGGER fail_at_commit AFTER INSERT ON provision.events
			DEFERRABLE INITIALLY DEFERRED
			FOR EACH ROW EXECUTE FUNCTION public.fail_at_commit('$sqlstate');
	});
}

sub drop_commit_trigger
{
	$node->safe_psql('provision', 'DROP TRIGGER fail_at_commit ON provision.events');
}

sub event_kinds
{
	my ($job) = @_;
	return join(',', map { $_->{kind} } @{ ProvisionTest::events_for_job($node, $job) });
}

# --- 40001 at COMMIT: retried, then 503; nothing recorded ---
my (undef, $job) = ProvisionTest::new_job($node);
my (undef, $cancelled) = ProvisionTest::new_job($node, status => 'cancelled');
add_commit_trigger('40001');
my $errors0 = ProvisionTest::metric_sum($l->metrics, 'provision_db_errors_total') // 0;
my $from = $l->log_size;
my $r = $l->callback({ job_id => $job, status => 'provisioning' }, delivery => 'commit-40001');
is($r->{status}, 503, '40001 at COMMIT: 503, not 200') or diag explain $r;
like($r->{headers}{'retry-after'} // '', qr/^\d+$/, '40001 at COMMIT: Retry-After');
like($r->{json}{error} // '', qr/retry/, '40001 at COMMIT: the error says to retry');
ok(!exists $r->{json}{applied}, '40001 at COMMIT: no handle_callback result in the body');
is(ProvisionTest::job_row($node, $job)->{status}, 'pending', '40001 at COMMIT: the job is still pending');
ok(!ProvisionTest::delivery_row($node, 'commit-40001'), '40001 at COMMIT: no delivery recorded');
is(event_kinds($job), 'enqueued', '40001 at COMMIT: no event');
is(ProvisionTest::metric_sum($l->metrics, 'provision_db_errors_total') - $errors0, 3,
	'40001 at COMMIT: tried three times');
like($l->log_content($from), qr/SQLSTATE 40001/, '40001 at COMMIT: the log names the SQLSTATE');

drop_commit_trigger();
$r = $l->callback({ job_id => $job, status => 'provisioning' }, delivery => 'commit-40001');
is($r->{status}, 200, 'trigger dropped: the retry answers 200') or diag explain $r;
ok($r->{json}{applied} && !$r->{json}{duplicate}, 'trigger dropped: the retry is applied, not a duplicate');
is(ProvisionTest::job_row($node, $job)->{status}, 'provisioning', 'trigger dropped: job provisioning');
is(event_kinds($job), 'enqueued,status', 'trigger dropped: applied once');
$r = $l->callback({ job_id => $job, status => 'provisioning' }, delivery => 'commit-40001');
ok($r->{status} == 200 && $r->{json}{duplicate}, 'trigger dropped: a second retry is a duplicate');

# --- another SQLSTATE at COMMIT: 500, nothing recorded ---
my (undef, $job2) = ProvisionTest::new_job($node, status => 'dispatched');
my ($agent3, $job3) = ProvisionTest::new_job($node, status => 'provisioning');
add_commit_trigger('23514');
$from = $l->log_size;
$r = $l->callback({ job_id => $job2, status => 'provisioning' }, delivery => 'commit-23514',
	scheme => 'standard');
is($r->{status}, 500, '23514 at COMMIT: 500') or diag explain $r;
is_deeply($r->{json}, { error => 'internal error' }, '23514 at COMMIT: no internal detail in the body');
is(ProvisionTest::job_row($node, $job2)->{status}, 'dispatched', '23514 at COMMIT: the job did not move');
ok(!ProvisionTest::delivery_row($node, 'commit-23514'), '23514 at COMMIT: no delivery recorded');
is(event_kinds($job2), 'enqueued,dispatched', '23514 at COMMIT: no event');
like($l->log_content($from), qr/SQLSTATE 23514: injected failure at commit/,
	'23514 at COMMIT: the log has the detail');

# A running job's metadata update at COMMIT, on the same connection.
$r = $l->callback({ job_id => $job3, status => 'running', server_id => 'srv-1',
	server_ip => '192.0.2.1', tailscale_ip => '100.64.0.1' }, delivery => 'commit-running');
is($r->{status}, 500, '23514 at COMMIT of a completion: 500');
ok(!ProvisionTest::instance_row($node, $agent3), '23514 at COMMIT of a completion: no instance');
is(ProvisionTest::agent_row($node, $agent3)->{status}, 'provisioning',
	'23514 at COMMIT of a completion: the agent is not active');
drop_commit_trigger();

$r = $l->callback({ job_id => $job2, status => 'provisioning' }, delivery => 'commit-23514',
	scheme => 'standard');
is($r->{status}, 200, 'trigger dropped: the 500 delivery is applied on retry');
ok(!$r->{json}{duplicate}, 'trigger dropped: not a duplicate');
is(event_kinds($job2), 'enqueued,dispatched,status', 'trigger dropped: one status event');

# Errors raised by the call itself leave the one connection usable.
$r = $l->callback({ job_id => $cancelled, status => 'provisioning' });
is($r->{status}, 409, 'refused transition: 409');
$r = $l->callback({ job_id => '00000000-0000-4000-8000-000000000001', status => 'heartbeat' });
is($r->{status}, 404, 'unknown job: 404');
$r = $l->callback({ job_id => $job2, status => 'heartbeat' });
is($r->{status}, 200, 'the connection serves after errors');
is($l->stop, 0, 'listener exits 0');

# --- the isolation level, whatever the role's or the database's default ---
$node->safe_psql('provision', q{
	CREATE TABLE public.isolation_seen (id bigserial PRIMARY KEY, level text NOT NULL);
	GRANT INSERT ON public.isolation_seen TO PUBLIC;
	GRANT USAGE ON SEQUENCE public.isolation_seen_id_seq TO PUBLIC;
	CREATE FUNCTION public.record_isolation() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.isolation_seen (level)
			VALUES (pg_catalog.current_setting('transaction_isolation'));
		RETURN NULL;
	END $$;
	CREATE TRIGGER record_isolation AFTER INSERT ON provision.events
		FOR EACH ROW EXECUTE FUNCTION public.record_isolation();
});

# What one listener answers to the same sequence of callbacks, for the
# comparison between defaults.
sub scenario
{
	my ($name) = @_;
	my $lx = ProvisionTest::start_listener(node => $node, user => $role, args => [ '--pool', '2' ]);
	my ($ret, $level) = $node->psql('provision', 'SHOW default_transaction_isolation',
		connstr => ProvisionTest::conninfo($node, user => $role));
	my (undef, $j) = ProvisionTest::new_job($node, status => 'dispatched');
	my (undef, $bj) = ProvisionTest::new_job($node, status => 'provisioning');
	# only what the listener writes from here on
	$node->safe_psql('provision', 'TRUNCATE public.isolation_seen');
	my @answers;
	for my $step (
		[ { job_id => $j, status => 'provisioning' }, "$name-1" ],
		[ { job_id => $j, status => 'provisioning' }, "$name-1" ],
		[ { job_id => $j, status => 'heartbeat' }, undef ],
		[ { job_id => $j, status => 'running', server_id => 7, server_ip => '192.0.2.7',
			tailscale_ip => '100.64.0.7' }, "$name-2" ],
		[ { job_id => $j, status => 'failed', error => 'late' }, "$name-3" ])
	{
		my $x = $lx->callback($step->[0], defined $step->[1] ? (delivery => $step->[1]) : ());
		my %body = %{ $x->{json} // {} };
		delete @body{qw(job_id agent_id instance_id error)};
		push @answers, [ $x->{status}, \%body ];
	}

	# Identical deliveries at the same moment: one applies, the others are
	# duplicates (under SERIALIZABLE some would fail with 40001 instead).
	my $start = Time::HiRes::time() + 0.3;
	my $burst = ProvisionTest::fork_clients(6, sub {
		Time::HiRes::sleep($start - Time::HiRes::time()) if $start > Time::HiRes::time();
		my $x = $lx->callback({ job_id => $bj, status => 'running', server_id => 8,
			server_ip => '192.0.2.8', tailscale_ip => '100.64.0.8' }, delivery => "$name-burst");
		return [ $x->{status}, $x->{json}{duplicate} ? 1 : 0 ];
	});
	my $seen = ProvisionTest::query_scalar($node,
		"SELECT string_agg(DISTINCT level, ',') FROM public.isolation_seen");
	is($lx->stop, 0, "$name: listener exits 0");
	return {
		role_default => $level,
		answers      => \@answers,
		burst        => join(',', sort map { $_ ? "$_->[0]/$_->[1]" : 'none' } @$burst),
		seen         => $seen,
	};
}

my $base = scenario('server-default');
is($base->{role_default}, 'read committed', 'server default: the role starts at READ COMMITTED');
is($base->{seen}, 'read committed', 'server default: callbacks ran at READ COMMITTED');
is($base->{burst}, '200/0,200/1,200/1,200/1,200/1,200/1', 'server default: burst applied once');
is_deeply([ map { $_->[0] } @{ $base->{answers} } ], [ 200, 200, 200, 200, 409 ],
	'server default: the statuses');

$node->safe_psql('provision', "ALTER ROLE $role SET default_transaction_isolation = 'serializable'");
my $by_role = scenario('role-serializable');
is($by_role->{role_default}, 'serializable', 'ALTER ROLE: the role now starts at SERIALIZABLE');
is($by_role->{seen}, 'read committed', 'ALTER ROLE: callbacks still ran at READ COMMITTED');
is_deeply($by_role->{answers}, $base->{answers}, 'ALTER ROLE: the same answers');
is($by_role->{burst}, $base->{burst}, 'ALTER ROLE: the burst is still applied once, no 503');
$node->safe_psql('provision', "ALTER ROLE $role RESET default_transaction_isolation");

$node->safe_psql('provision',
	"ALTER DATABASE provision SET default_transaction_isolation = 'serializable'");
my $by_db = scenario('database-serializable');
is($by_db->{role_default}, 'serializable', 'ALTER DATABASE: sessions now start at SERIALIZABLE');
is($by_db->{seen}, 'read committed', 'ALTER DATABASE: callbacks still ran at READ COMMITTED');
is_deeply($by_db->{answers}, $base->{answers}, 'ALTER DATABASE: the same answers');
is($by_db->{burst}, $base->{burst}, 'ALTER DATABASE: the burst is still applied once, no 503');

$node->safe_psql('provision',
	"ALTER DATABASE provision SET default_transaction_isolation = 'repeatable read'");
my $rr = scenario('database-repeatable-read');
is($rr->{seen}, 'read committed', 'REPEATABLE READ default: callbacks ran at READ COMMITTED');
is_deeply($rr->{answers}, $base->{answers}, 'REPEATABLE READ default: the same answers');
$node->safe_psql('provision', 'ALTER DATABASE provision RESET default_transaction_isolation');

done_testing();
