
# The pool after an outage long enough for every connection to back off for
# seconds: the database comes back and the first callback is answered 200
# within 2 s (the pool tries a connection at least once a second while it
# has none), and from then on the other pool connections reconnect at once
# instead of waiting out their own backoff: four callbacks at the same time
# each get a connection (they wait on row locks, then answer 200), none a
# 503.  While the database is down, a failed connection logs the reason of
# every host in the connection string, on one line.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;

my $node = ProvisionTest::new_node('reconnect');
my $role = ProvisionTest::create_listener_role($node);
my @jobs = map { (ProvisionTest::new_job($node, status => 'provisioning'))[1] } 1 .. 5;
my ($first, @locked) = @jobs;

# Two hosts, the first one never there: libpq tries both on every attempt.
my $absent = PostgreSQL::Test::Cluster::get_free_port();
my $conninfo = sprintf('host=%s,%s port=%d,%d dbname=provision user=%s',
	$node->host, $node->host, $absent, $node->port, $role);
my $l = ProvisionTest::start_listener(database => $conninfo,
	args => [ '--pool', '4', '--threads', '4' ]);
is($l->callback({ job_id => $first, status => 'heartbeat' })->{status}, 200,
	'a callback is answered while the database is up');

# Requests through an outage of 8 s: every connection fails again and again,
# its backoff doubling to 3.2 s and then 5 s (with up to 25% jitter), so at
# the end every slot's next attempt of its own is seconds away.
$node->stop('fast');
my %codes;
my $t0 = time();
while (time() < $t0 + 8)
{
	$codes{ $l->callback({ job_id => $first, status => 'heartbeat' })->{status} }++;
	sleep(0.05);
}
is_deeply([ keys %codes ], ['503'], 'every callback during the outage is answered 503')
  or diag explain \%codes;

my $port = $node->port;
my @failed = grep { /database connection failed/ } split /\n/, $l->log_content;
ok((grep { /\.s\.PGSQL\.$absent\S* failed: .*\.s\.PGSQL\.$port\S* failed: / } @failed),
	'a failed connection logs both hosts\' reasons on one line')
  or diag(join("\n", @failed[ 0 .. ($#failed < 2 ? $#failed : 2) ]));
ok(!(grep { /Is the server running/ } @failed), 'without libpq\'s hints');

$node->start;
my $t_up = time();
my $status = 0;
while ($status != 200 && time() < $t_up + 15)
{
	$status = $l->callback({ job_id => $first, status => 'heartbeat' })->{status};
	sleep(0.05) if $status != 200;
}
my $back = time() - $t_up;
is($status, 200, 'callbacks are answered 200 again');
cmp_ok($back, '<=', 2, 'within 2 s of the database accepting connections');
note(sprintf('first 200 %.2f s after the restart', $back));

# One connection is back; the other three are still in their backoff.  Four
# callbacks at once, each on a job whose row is locked, need four
# connections: they wait on the locks, and answer 200 when they are gone.
my $bg = $node->background_psql('provision');
$bg->query_safe('BEGIN');
$bg->query_safe('SELECT id FROM provision.provisioning_jobs WHERE id IN ('
	  . join(', ', map { ProvisionTest::quote_literal($_) } @locked) . ') FOR UPDATE');
my $clients = ProvisionTest::start_clients(
	scalar @locked,
	sub {
		my ($i) = @_;
		my $r = $l->callback({ job_id => $locked[$i], status => 'heartbeat' }, timeout => 20);
		return { status => $r->{status}, error => $r->{json} ? $r->{json}{error} : undef };
	});
ok( ProvisionTest::wait_until(
		sub {
			ProvisionTest::query_scalar($node,
				"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = 'provision'"
			) == @locked;
		},
		timeout => 10),
	'four callbacks hold four connections, waiting on the row locks');
$bg->query_safe('COMMIT');
$bg->quit;
my $res = ProvisionTest::finish_clients($clients, timeout => 30);
is_deeply([ map { $_->{status} } @$res ], [ (200) x @locked ],
	'all four are answered 200, none 503 for a connection still backing off')
  or diag explain $res;
cmp_ok(ProvisionTest::metric_sum($l->metrics, 'provision_db_reconnects_total') // 0,
	'>=', 4, 'every pool connection was made again');
is($l->stop, 0, 'the listener exits 0');

done_testing();
