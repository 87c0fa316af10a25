
# Several dispatchers on one database never dispatch one job twice; a
# database restart under load needs no dispatcher restart: the answers
# received while the database is away are recorded once it is back, and
# no job is left without its run.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;
use DispatcherTest;

my $node = ProvisionTest::new_node('main');
my $gh = FakeGitHub->new(tokens => [$DispatcherTest::TOKEN]);

sub enqueue_many
{
	my ($n) = @_;
	my $ids = ProvisionTest::query_scalar($node, qq{
		WITH a AS (
			INSERT INTO provision.agents (name)
			SELECT 'many-' || g || '-' || pg_catalog.gen_random_uuid() FROM generate_series(1, $n) g
			RETURNING id)
		SELECT string_agg(provision.enqueue_job(a.id)::text, ' ') FROM a});
	return split / /, $ids;
}

sub per_job
{
	my %n;
	$n{ $_->{json}{inputs}{job_id} }++ for grep { $_->{json} } $gh->requests(endpoint => 'dispatch');
	return \%n;
}

sub without_run
{
	my ($jobs) = @_;
	my $list = join(',', map { "'$_'" } @$jobs);
	return ProvisionTest::query_scalar($node,
		"SELECT count(*) FROM provision.provisioning_jobs WHERE id IN ($list) AND workflow_run_id IS NULL");
}

# ---- three dispatchers, one database --------------------------------------------

my @d = map {
	DispatcherTest::start_dispatcher(node => $node, github => $gh, metrics => 1,
		args => [ '--batch', 3, '--log-format', 'json' ])
} 1 .. 3;
my @jobs = enqueue_many(60);
ProvisionTest::wait_until(sub { without_run(\@jobs) == 0 }, timeout => 60);
is(without_run(\@jobs), 0, 'all 60 jobs have their run');
my $n = per_job();
is(scalar(grep { ($n->{$_} // 0) == 1 } @jobs), 60, 'each dispatched exactly once');
is(scalar $gh->runs, 60, 'sixty runs in all');
my @by = map {
	ProvisionTest::metric_sum($_->metrics, 'provision_dispatcher_dispatches_total', { outcome => 'run' })
} @d;
is($by[0] + $by[1] + $by[2], 60, "the dispatchers shared them (@by)");
ok((grep { $_ > 0 } @by) >= 2, 'more than one of them took part');
my $dup = ProvisionTest::query_scalar($node,
	'SELECT count(*) FROM (SELECT workflow_run_id FROM provision.provisioning_jobs '
	  . 'WHERE workflow_run_id IS NOT NULL GROUP BY 1 HAVING count(*) > 1) x');
is($dup, 0, 'no run recorded for two jobs');

# ---- a database restart under load ------------------------------------------------

# Slow answers keep calls in flight while the database goes away.
$gh->script({ endpoint => 'dispatch', delay => 0.2, times => 1000 });
@jobs = enqueue_many(40);
ProvisionTest::wait_until(sub { $gh->requests(endpoint => 'dispatch') >= 60 + 6 });
$node->stop('immediate');
sleep(2);
ok(scalar(grep { $_->running } @d) == 3, 'the dispatchers keep running without the database');
$node->start;
ProvisionTest::wait_until(sub { without_run(\@jobs) == 0 }, timeout => 60);
my $left = without_run(\@jobs);
if ($left > 0)
{
	# A claim whose commit the restart hid from its dispatcher is an orphan
	# for reconciliation; make it old enough to be looked up now.
	note("$left jobs without a run after the restart; aging them for reconciliation");
	$node->safe_psql('provision',
		"UPDATE provision.provisioning_jobs SET dispatched_at = now() - interval '150 seconds' "
		  . "WHERE status = 'dispatched' AND workflow_run_id IS NULL");
	ProvisionTest::wait_until(sub { without_run(\@jobs) == 0 }, timeout => 60);
}
is(without_run(\@jobs), 0, 'after the restart every job has its run');
$n = per_job();
my @twice = grep { $n->{$_} > 1 } @jobs;
my $resent = 0;
$resent += ProvisionTest::metric_sum($_->metrics, 'provision_dispatcher_reconciled_jobs_total',
	{ action => 'resent' }) for @d;
is(scalar @twice, $resent, 'a job is dispatched twice only when reconciliation resent it ('
	  . scalar(@twice) . ')');
my $runs = ProvisionTest::query_json($node,
	"SELECT json_agg(workflow_run_id) FROM provision.provisioning_jobs WHERE id IN ("
	  . join(',', map { "'$_'" } @jobs) . ')');
my %seen;
is(scalar(grep { $seen{$_}++ } @$runs), 0, 'forty different runs recorded');
my $reconnects = 0;
$reconnects += ProvisionTest::metric_sum($_->metrics, 'provision_dispatcher_db_reconnects_total', {})
  for @d;
ok($reconnects >= 3, "each dispatcher reconnected ($reconnects reconnects)");
like($d[0]->log_content, qr/database connection lost|cannot connect to the database/,
	'the outage is logged');
like($d[0]->log_content, qr/database connection re-established/, 'and the recovery');
is($_->stop, 0, 'SIGTERM: exit 0') for @d;

done_testing();
