
# A burst of 20 identical deliveries in parallel over HTTP (a sender that
# retries too eagerly, a proxy that replays): one effect.  All 20 are
# answered 200 (a 503 is retried until 200): exactly one applied, the other
# 19 duplicates carrying the stored result.  Done for the move to
# provisioning and for the running callback with metadata, with each
# signature scheme, against a pool of 10 so the copies really meet in the
# database at the same moment.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;
use FaultLoad;

my $copies = 20;

my $node = ProvisionTest::new_node('burst');
ProvisionTest::create_listener_role($node);
my $l = ProvisionTest::start_listener(node => $node, user => 'provision_listener',
	args => [ '--pool', '10' ]);

my %total = (requests => 0, ok => 0, applied => 0, duplicates => 0, retries => 0);

# Sends $copies copies of one delivery at once: every child waits for the
# same start instant, then delivers (retrying a 503 until 200).
sub burst
{
	my ($d, $scheme) = @_;
	my $start = time() + 0.5;
	my $res = ProvisionTest::fork_clients($copies, sub {
		sleep($start - time()) if $start > time();
		return FaultLoad::deliver($l, $d, scheme => $scheme, deadline => 30);
	}, timeout => 60);
	return $res;
}

for my $scheme ('github', 'standard')
{
	my ($agent, $job) = ProvisionTest::new_job($node);
	my $plan = FaultLoad::plan_for("burst_$scheme", $job, 7);
	for my $d ($plan->[0], $plan->[2])
	{
		my $what = "$scheme $d->{kind}";
		my $res = burst($d, $scheme);
		my @got = grep { defined } @$res;
		is(scalar(@got), $copies, "$what: every client reported");
		is(scalar(grep { $_->{final} == 200 } @got), $copies, "$what: all $copies answered 200 in the end");
		my @fresh = grep { $_->{final} == 200 && !$_->{duplicate} } @got;
		my @dups = grep { $_->{final} == 200 && $_->{duplicate} } @got;
		is(scalar(@fresh), 1, "$what: exactly one answer is not a duplicate");
		is(scalar(@dups), $copies - 1, "$what: the others are duplicates");
		ok(@fresh && $fresh[0]{applied}, "$what: the one answer reports applied");
		my @other = grep { $_ != 200 && $_ != 503 } map { @{ $_->{codes} } } @got;
		is(scalar(@other), 0, "$what: no answer other than 200 or 503") or diag("@other");

		my $retries = 0;
		$retries += @{ $_->{codes} } - 1 for @got;
		$total{requests} += @{ $_->{codes} } for @got;
		$total{ok} += @got;
		$total{applied} += @fresh;
		$total{duplicates} += @dups;
		$total{retries} += $retries;
		my $slowest = 0;
		$slowest = $_->{elapsed} > $slowest ? $_->{elapsed} : $slowest for @got;
		note(sprintf('%s: %d answers 200 (1 applied, %d duplicates), %d retries, slowest %.2fs',
			$what, scalar(@got), scalar(@dups), $retries, $slowest));
	}

	my $events = ProvisionTest::events_for_job($node, $job);
	is_deeply([ map { $_->{kind} } @$events ], [ 'enqueued', 'status', 'completed' ],
		"$scheme: one event per state change, none twice");
	my $inst = ProvisionTest::query_scalar($node,
		"SELECT count(*) FROM provision.agent_instances WHERE agent_id = '$agent'");
	is($inst, 1, "$scheme: one instance");
	my $row = ProvisionTest::instance_row($node, $agent);
	is($row->{job_id}, $job, "$scheme: the instance belongs to the job");
	is($row->{server_id}, '10007', "$scheme: with the metadata sent");
	my $job_row = ProvisionTest::job_row($node, $job);
	is($job_row->{status}, 'running', "$scheme: the job is running");
	is($job_row->{attempts}, 1, "$scheme: one provisioning attempt counted");
	is(ProvisionTest::agent_row($node, $agent)->{status}, 'active', "$scheme: the agent is active");
	is(ProvisionTest::query_scalar($node,
		"SELECT count(*) FROM provision.callback_deliveries WHERE job_id = '$job'"),
		2, "$scheme: two deliveries recorded");
}

my $dup_metric = ProvisionTest::metric_sum($l->metrics, 'provision_duplicate_deliveries_total');
is($dup_metric, $total{duplicates}, 'the duplicates metric counts every duplicate answer');
note(sprintf('burst figures: requests sent %d, 200s %d, applied %d, duplicates %d, retries %d, '
	  . 'event rows %s, instance rows %s',
	$total{requests}, $total{ok}, $total{applied}, $total{duplicates}, $total{retries},
	ProvisionTest::query_scalar($node, 'SELECT count(*) FROM provision.events'),
	ProvisionTest::query_scalar($node, 'SELECT count(*) FROM provision.agent_instances')));

done_testing();
