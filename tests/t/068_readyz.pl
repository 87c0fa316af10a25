
# /readyz is answered from a readiness probe at most a second old, run on a
# connection of its own: it checks that the extension is installed, at the
# version the server's extension files make the default, and that the
# listener's role may use schema provision and EXECUTE
# provision.handle_callback(jsonb, text), and answers 503 naming what is
# missing.  A REVOKE shows within about a second, and so does the GRANT that
# repairs it.  Probes never wait for a pool connection: with every pool
# connection stuck on a row lock /readyz still answers at once, and a flood
# of /readyz while callbacks run neither slows nor fails a callback and
# reaches the database about once a second (the probe counter on /metrics).

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;

my $node = ProvisionTest::new_node('readyz');
my $role = ProvisionTest::create_listener_role($node);
my $l = ProvisionTest::start_listener(node => $node, user => $role,
	args => [ '--pool', '2', '--pool-wait', '1s', '--statement-timeout', '8s' ]);

sub probes
{
	return ProvisionTest::metric_sum($l->metrics, 'provision_readiness_probes_total');
}

# wait_readyz($status): seconds until /readyz answers $status (undef if not
# within 5 s) and that answer.
sub wait_readyz
{
	my ($status) = @_;
	my $t0 = time();
	my $r;
	my $ok = ProvisionTest::wait_until(sub {
		$r = $l->get('/readyz');
		return $r->{status} == $status;
	}, timeout => 5, interval => 0.05);
	return ($ok ? time() - $t0 : undef, $r);
}

my $r = $l->get('/readyz');
is($r->{status}, 200, '/readyz 200 as the least-privileged role');
is_deeply($r->{json}, { status => 'ready' }, '/readyz body');
is(probes(), 1, 'one probe so far');

# Answers within the second come from that probe.
my $p0 = probes();
my $t0 = time();
my @statuses = map { $l->get('/readyz')->{status} } 1 .. 30;
my $elapsed = time() - $t0;
is_deeply(\@statuses, [ (200) x 30 ], '30 more /readyz: all 200');
cmp_ok(probes() - $p0, '<=', 1 + int($elapsed), "30 /readyz in ${\ sprintf('%.2f', $elapsed)}s: at most one probe a second");

is(ProvisionTest::query_scalar($node,
	"SELECT count(*) || ' ' || count(*) FILTER (WHERE query LIKE '%has_function_privilege%')"
	  . " FROM pg_stat_activity WHERE usename = '$role'"),
	'3 1', 'the probe has a connection of its own, beside the pool\'s two');

# --- EXECUTE revoked and granted again ---
my $from = $l->log_size;
$node->safe_psql('provision',
	"REVOKE EXECUTE ON FUNCTION provision.handle_callback(jsonb, text) FROM $role");
my ($took, $x) = wait_readyz(503);
ok(defined $took, 'EXECUTE revoked: /readyz 503');
cmp_ok($took // 99, '<', 2, 'within about a second');
is_deeply($x->{json},
	{ error => 'the database role lacks EXECUTE on provision.handle_callback(jsonb, text)' },
	'EXECUTE revoked: the error names the privilege and the function');
like($x->{headers}{'retry-after'} // '', qr/^\d+$/, 'EXECUTE revoked: Retry-After');
like($l->wait_for_log(qr/not ready: [^\n]*/, $from) // '',
	qr/lacks EXECUTE on provision\.handle_callback\(jsonb, text\): role $role/,
	'EXECUTE revoked: the log names the role');

$node->safe_psql('provision',
	"GRANT EXECUTE ON FUNCTION provision.handle_callback(jsonb, text) TO $role");
($took, $x) = wait_readyz(200);
ok(defined $took, 'EXECUTE granted again: /readyz 200');
cmp_ok($took // 99, '<', 2, 'within about a second');
like($l->wait_for_log(qr/level=info msg="ready: [^\n]*/, $from) // '', qr/role $role/,
	'ready again: logged');

# --- USAGE on the schema ---
$node->safe_psql('provision', "REVOKE USAGE ON SCHEMA provision FROM $role");
($took, $x) = wait_readyz(503);
is_deeply($x->{json}, { error => 'the database role lacks USAGE on schema provision' },
	'USAGE revoked: /readyz 503 naming it');
$node->safe_psql('provision', "GRANT USAGE ON SCHEMA provision TO $role");
($took, $x) = wait_readyz(200);
ok(defined $took, 'USAGE granted again: /readyz 200');

# --- every pool connection stuck: /readyz does not wait for one ---
my @jobs = map { (ProvisionTest::new_job($node, status => 'provisioning'))[1] } 1 .. 2;
my $bg = $node->background_psql('provision');
$bg->query_safe('BEGIN');
$bg->query_safe('SELECT id FROM provision.provisioning_jobs WHERE id IN ('
	  . join(', ', map { ProvisionTest::quote_literal($_) } @jobs) . ') FOR UPDATE');
my $stuck = ProvisionTest::start_clients(2, sub {
	my ($i) = @_;
	return $l->callback({ job_id => $jobs[$i], status => 'heartbeat' }, timeout => 20)->{status};
});
ok(ProvisionTest::wait_until(sub {
	ProvisionTest::query_scalar($node,
		"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND usename = '$role'") == 2
}, timeout => 10), 'both pool connections wait on a row lock');
sleep(1.1);    # past the cached result: the next /readyz runs a probe
$t0 = time();
$r = $l->get('/readyz', timeout => 5);
$elapsed = time() - $t0;
is($r->{status}, 200, 'pool stuck: /readyz 200');
cmp_ok($elapsed, '<', 0.5, 'pool stuck: answered at once, not after --pool-wait');
$bg->query_safe('COMMIT');
is_deeply(ProvisionTest::finish_clients($stuck, timeout => 20), [ 200, 200 ],
	'the stuck callbacks complete');
$bg->quit;

# --- a flood of /readyz while callbacks run ---
my $flood_seconds = 3;
my @cb_jobs = map { (ProvisionTest::new_job($node, status => 'provisioning'))[1] } 1 .. 2;
$p0 = probes();
my $start = time() + 0.3;
my $flood = ProvisionTest::start_clients(3, sub {
	sleep($start - time()) if $start > time();
	my $http = HTTP::Tiny->new(timeout => 10, keep_alive => 1);
	my %count;
	my $url = $l->url('/readyz');
	while (time() < $start + $flood_seconds)
	{
		$count{ $http->get($url)->{status} }++;
	}
	return \%count;
});
my $callbacks = ProvisionTest::start_clients(2, sub {
	my ($i) = @_;
	sleep($start + 0.2 - time()) if $start + 0.2 > time();
	my @r;
	for my $n (1 .. 20)
	{
		my $t = time();
		my $c = $l->callback({ job_id => $cb_jobs[$i], status => 'heartbeat' }, timeout => 10);
		push @r, [ $c->{status}, time() - $t ];
	}
	return \@r;
});
my $cb = ProvisionTest::finish_clients($callbacks, timeout => 30);
my $fl = ProvisionTest::finish_clients($flood, timeout => 30);
my $probe_count = probes() - $p0;

my @cb_all = map { @{ $_ // [] } } @$cb;
is(scalar @cb_all, 40, 'flood: every callback answered');
is(scalar(grep { $_->[0] == 200 } @cb_all), 40, 'flood: every callback 200');
my ($slowest) = sort { $b <=> $a } map { $_->[1] } @cb_all;
cmp_ok($slowest // 99, '<', 1, 'flood: no callback waited (slowest ' . sprintf('%.3f', $slowest // 99) . 's)');
my %ready;
for my $c (@$fl)
{
	$ready{$_} += $c->{$_} for keys %{ $c // {} };
}
my $total = 0;
$total += $_ for values %ready;
cmp_ok($total, '>=', 100, "flood: $total /readyz answered");
is_deeply([ keys %ready ], [200], 'flood: every /readyz 200');
cmp_ok($probe_count, '<=', $flood_seconds + 2,
	"flood: $probe_count probes reached the database for $total /readyz");
is(ProvisionTest::metric_sum($l->metrics, 'provision_db_pool_in_use'), 0, 'no pool connection left borrowed');

is($l->stop, 0, 'listener exits 0');

# --- a database whose extension is older than the server's files ---
# The library is shared by every version, so callbacks in such a database
# fail until ALTER EXTENSION ... UPDATE: not ready until then.
my $default = ProvisionTest::query_scalar($node,
	"SELECT default_version FROM pg_catalog.pg_available_extensions WHERE name = 'provision'");
$node->safe_psql('postgres', 'CREATE DATABASE older');
$node->safe_psql('older', "CREATE EXTENSION provision VERSION '1.0'");
my $lo = ProvisionTest::start_listener(node => $node, dbname => 'older');
$r = $lo->get('/readyz');
is($r->{status}, 503, 'extension 1.0 under newer files: /readyz 503');
is_deeply($r->{json},
	{ error => "extension provision is at version 1.0 in the database, but the server's "
		  . "extension files are version $default; run ALTER EXTENSION provision UPDATE" },
	'the error names both versions and the command');
$node->safe_psql('older', 'ALTER EXTENSION provision UPDATE');
my $ready = ProvisionTest::wait_until(sub { $lo->get('/readyz')->{status} == 200 }, timeout => 5,
	interval => 0.1);
ok($ready, 'after ALTER EXTENSION provision UPDATE: /readyz 200');
is($lo->stop, 0, 'listener exits 0');

# --- an unknown role: not ready, saying the database is unreachable ---
my $l2 = ProvisionTest::start_listener(node => $node, user => 'no_such_role');
$r = $l2->get('/readyz');
is($r->{status}, 503, 'unknown role: /readyz 503');
is_deeply($r->{json}, { error => 'database unreachable' }, 'unknown role: no server message in the body');
like($l2->wait_for_log(qr/not ready: [^\n]*/) // '', qr/database unreachable: .*no_such_role/,
	'unknown role: the log has the server message');
is($l2->stop, 0, 'listener exits 0');

done_testing();
