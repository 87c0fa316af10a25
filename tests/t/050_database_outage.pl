
# The database goes away and comes back: /healthz stays 200, /readyz and
# callbacks answer 503 with Retry-After meanwhile (never 2xx, nothing
# recorded), and after the restart the same listener process serves again
# with no restart of its own.  /readyz is also 503 for a database that lacks
# the extension.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();
use ProvisionTest;

my $node = ProvisionTest::new_node('outage');
my $l = ProvisionTest::start_listener(node => $node, args => [ '--pool', '2' ]);
my $pid = $l->pid;

my ($agent, $job) = ProvisionTest::new_job($node, status => 'dispatched');

is($l->get('/readyz')->{status}, 200, '/readyz 200 while the database is up');
my $r = $l->callback({ job_id => $job, status => 'provisioning' });
is($r->{status}, 200, 'callback 200 while the database is up');

$node->stop('fast');

$r = $l->get('/readyz');
is($r->{status}, 503, '/readyz 503 while the database is down');
is($l->get('/healthz')->{status}, 200, '/healthz still 200 while the database is down');

for my $scheme ('github', 'standard')
{
	my $t0 = Time::HiRes::time();
	$r = $l->callback(
		{
			job_id => $job, status => 'running', server_id => 'srv-1',
			server_ip => '192.0.2.1', tailscale_ip => '100.64.0.1'
		},
		scheme => $scheme, delivery => "outage-$scheme");
	is($r->{status}, 503, "$scheme: callback 503 while the database is down") or diag explain $r;
	like($r->{headers}{'retry-after'} // '', qr/^\d+$/, "$scheme: Retry-After in seconds");
	ok(ref $r->{json} eq 'HASH' && length($r->{json}{error} // ''), "$scheme: JSON error body");
	cmp_ok(Time::HiRes::time() - $t0, '<', 15, "$scheme: the 503 came without a long wait");
}
ok($l->running, 'listener keeps running without its database');

$node->start;

my $ready = ProvisionTest::wait_until(sub { $l->get('/readyz')->{status} == 200 }, interval => 0.2);
ok($ready, '/readyz returns to 200 after the database restart');

# Every pool connection was broken by the restart; each must be replaced.
my @after;
for my $i (1 .. 4)
{
	my (undef, $j) = ProvisionTest::new_job($node, status => 'dispatched');
	push @after, $l->callback({ job_id => $j, status => 'provisioning' })->{status};
}
is_deeply(\@after, [ 200, 200, 200, 200 ], 'callbacks 200 again on every pool connection');

# The 503 deliveries changed nothing and were not recorded, so their retry
# is applied.
is(ProvisionTest::job_row($node, $job)->{status}, 'provisioning', 'the 503 callbacks changed nothing');
ok(!ProvisionTest::delivery_row($node, 'outage-github'), 'a 503 delivery is not recorded');
$r = $l->callback(
	{
		job_id => $job, status => 'running', server_id => 'srv-1',
		server_ip => '192.0.2.1', tailscale_ip => '100.64.0.1'
	},
	delivery => 'outage-github');
is($r->{status}, 200, 'the retried delivery answers 200');
ok($r->{json}{applied} && !$r->{json}{duplicate}, 'and is applied');
is($l->pid, $pid, 'same listener process throughout');
cmp_ok(ProvisionTest::metric_sum($l->metrics, 'provision_db_reconnects_total') // 0,
	'>=', 1, 'reconnects are counted');

# A second outage, this time with an immediate stop (no goodbye to clients).
$node->stop('immediate');
is($l->get('/readyz')->{status}, 503, '/readyz 503 after an immediate stop');
$node->start;
ok(ProvisionTest::wait_until(sub { $l->get('/readyz')->{status} == 200 }, interval => 0.2),
	'/readyz 200 again after the second restart');
my (undef, $j2) = ProvisionTest::new_job($node, status => 'dispatched');
is($l->callback({ job_id => $j2, status => 'provisioning' })->{status}, 200,
	'callback 200 after the second restart');
is($l->stop, 0, 'listener exits 0');

# --- started while its database is down ---
{
	my $down = ProvisionTest::new_node('down');
	my (undef, $dj) = ProvisionTest::new_job($down, status => 'dispatched');
	$down->stop('fast');
	my $l3 = ProvisionTest::start_listener(node => $down);
	ok($l3->running, 'database down at start: the listener starts anyway');
	is($l3->get('/readyz')->{status}, 503, 'database down at start: /readyz 503');
	my $x = $l3->callback({ job_id => $dj, status => 'provisioning' });
	is($x->{status}, 503, 'database down at start: callback 503');
	like($x->{headers}{'retry-after'} // '', qr/^\d+$/, 'database down at start: Retry-After');
	$down->start;
	ok(ProvisionTest::wait_until(sub { $l3->get('/readyz')->{status} == 200 }, interval => 0.2),
		'database down at start: /readyz 200 once it is up');
	is($l3->callback({ job_id => $dj, status => 'provisioning' })->{status}, 200,
		'database down at start: callbacks 200 once it is up');
	is(ProvisionTest::metric_sum($l3->metrics, 'provision_db_pool_in_use'), 0,
		'no connection left borrowed after the outage');

	# Reconnect backoff must not delay a shutdown.
	$down->stop('fast');
	is($l3->get('/readyz')->{status}, 503, 'database down again: /readyz 503');
	my $t0 = Time::HiRes::time();
	is($l3->stop(timeout => 20), 0, 'SIGTERM while the database is down: exit 0');
	cmp_ok(Time::HiRes::time() - $t0, '<', 5, 'and promptly');
}

# --- a database without the extension ---
$node->safe_psql('postgres', 'CREATE DATABASE plain');
my $l2 = ProvisionTest::start_listener(node => $node, dbname => 'plain');
is($l2->get('/healthz')->{status}, 200, 'no extension: /healthz 200');
$r = $l2->get('/readyz');
is($r->{status}, 503, 'no extension: /readyz 503');
like($r->{content}, qr/provision|extension/i, 'no extension: the body says why');
is($l2->stop, 0, 'listener exits 0');

done_testing();
