
# Slow queries hold database connections: a session keeps a row lock on one
# job (BEGIN; SELECT ... FOR UPDATE) while callbacks for that job arrive.
#  - With fewer of them than pool connections, other jobs' callbacks still
#    succeed promptly on the free connections, and each request for the
#    locked job waits no longer than --statement-timeout, then gets 503 with
#    Retry-After.
#  - With twice as many of them as pool connections (the pool exhausted),
#    every request, for the locked job or another, is answered (200 or 503)
#    within --pool-wait plus --statement-timeout; nothing hangs.
# After the lock is released every worker and connection still serves:
# --pool * 2 parallel callbacks all succeed, and the locked job's deliveries,
# which were never recorded, apply exactly once when retried.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;
use FaultLoad;

my $pool = 4;
my $stmt_timeout = 3;
my $pool_wait = 3;

my $node = ProvisionTest::new_node('pool');
ProvisionTest::create_listener_role($node);
my $l = ProvisionTest::start_listener(node => $node, user => 'provision_listener',
	args => [ '--pool', $pool, '--statement-timeout', "${stmt_timeout}s",
		'--pool-wait', "${pool_wait}s" ]);

my %fig = (requests => 0, ok => 0, s503 => 0);

my (undef, $ljob) = ProvisionTest::new_job($node);
my $others = FaultLoad::create_jobs($node, 'pool', 60);

my $lock = $node->background_psql('provision');
$lock->query_safe('BEGIN');
$lock->query_safe(
	"SELECT id FROM provision.provisioning_jobs WHERE id = '$ljob' FOR UPDATE");

# One attempt, no retry: the answer itself is what is asserted here.
sub once
{
	my ($payload, $delivery) = @_;
	my $t0 = time();
	my $r = $l->callback($payload, delivery => $delivery, timeout => 30);
	return {
		status      => $r->{status},
		elapsed     => time() - $t0,
		retry_after => $r->{headers}{'retry-after'},
		applied     => $r->{json} ? $r->{json}{applied} : undef,
		duplicate   => $r->{json} ? $r->{json}{duplicate} : undef,
	};
}

# $n_locked clients send one callback each for the locked job; $n_other
# clients send callbacks for other jobs one after the other, starting a
# moment later so that the locked requests already hold their connections.
sub phase
{
	my ($name, $n_locked, $n_other, $other_jobs_each, $first_other) = @_;
	my $res = ProvisionTest::fork_clients($n_locked + $n_other, sub {
		my ($i) = @_;
		if ($i < $n_locked)
		{
			return [ once({ job_id => $ljob, status => 'provisioning' }, "pool-lock-$name-$i") ];
		}
		sleep(0.5);
		my @out;
		my $base = $first_other + ($i - $n_locked) * $other_jobs_each;
		for my $j ($base .. $base + $other_jobs_each - 1)
		{
			my $job = $others->[$j];
			push @out, once({ job_id => $job, status => 'provisioning' }, "pool-$job-p");
		}
		return \@out;
	}, timeout => 60);
	my @locked = map { @{ $_ // [] } } @$res[ 0 .. $n_locked - 1 ];
	my @other = map { @{ $_ // [] } } @$res[ $n_locked .. $n_locked + $n_other - 1 ];
	for my $r (@locked, @other)
	{
		$fig{requests}++;
		$fig{ok}++ if $r->{status} == 200;
		$fig{s503}++ if $r->{status} == 503;
	}
	return (\@locked, \@other);
}

sub max_of { my $m = 0; $m = $_ > $m ? $_ : $m for @_; return $m; }

# Phase A: half the pool stuck on the lock.
my ($locked, $other) = phase('a', $pool / 2, 2, 10, 0);
is(scalar(@$locked), $pool / 2, 'A: every locked-job request was answered');
is_deeply([ map { $_->{status} } @$locked ], [ (503) x ($pool / 2) ],
	'A: the locked-job requests get 503');
ok(!grep({ ($_->{retry_after} // '') !~ /^\d+$/ } @$locked), 'A: with Retry-After');
my $lmax = max_of(map { $_->{elapsed} } @$locked);
cmp_ok($lmax, '>=', $stmt_timeout - 0.2, 'A: after waiting for the statement timeout');
cmp_ok($lmax, '<', $stmt_timeout + 2, 'A: and not much longer');
is(scalar(@$other), 20, 'A: every other-job request was answered');
is(scalar(grep { $_->{status} == 200 } @$other), 20, 'A: other jobs\' callbacks all succeed meanwhile');
my $omax = max_of(map { $_->{elapsed} } @$other);
# Well under the statement timeout: served on a free connection, not
# queued behind the lock.
cmp_ok($omax, '<', $stmt_timeout / 2, 'A: promptly');
note(sprintf('A: locked requests %d answered 503 after at most %.2fs; other requests %d, slowest %.3fs',
	scalar(@$locked), $lmax, scalar(@$other), $omax));

# Phase B: twice as many locked-job requests as connections.
($locked, $other) = phase('b', $pool * 2, 2, 5, 20);
my $bound = $pool_wait + $stmt_timeout + 2;
is(scalar(@$locked), $pool * 2, 'B: every locked-job request was answered');
is(scalar(grep { $_->{status} == 503 } @$locked), $pool * 2, 'B: all of them 503');
$lmax = max_of(map { $_->{elapsed} } @$locked);
cmp_ok($lmax, '<', $bound, "B: each within --pool-wait + --statement-timeout (${bound}s with margin)");
is(scalar(@$other), 10, 'B: every other-job request was answered');
is(scalar(grep { $_->{status} != 200 && $_->{status} != 503 } @$other), 0,
	'B: other jobs get 200 or 503, nothing else');
$omax = max_of(map { $_->{elapsed} } @$other);
cmp_ok($omax, '<', $bound, 'B: within the same bound');
note(sprintf('B: locked requests %d, 503 after at most %.2fs; other requests %d (%d ok), slowest %.2fs',
	scalar(@$locked), $lmax, scalar(@$other), scalar(grep { $_->{status} == 200 } @$other), $omax));

is(ProvisionTest::job_row($node, $ljob)->{status}, 'pending', 'the locked job is unchanged');
is(ProvisionTest::query_scalar($node,
	"SELECT count(*) FROM provision.callback_deliveries WHERE delivery_id LIKE 'pool-lock-%'"),
	0, 'no 503 delivery was recorded');

$lock->query_safe('ROLLBACK');
$lock->quit;

# Every worker and connection serves again: pool * 2 at once, all 200.
my $res = ProvisionTest::fork_clients($pool * 2, sub {
	my ($i) = @_;
	return once({ job_id => $others->[ 40 + $i ], status => 'provisioning' },
		"pool-after-$i");
}, timeout => 30);
is_deeply([ map { $_ ? $_->{status} : 'none' } @$res ], [ (200) x ($pool * 2) ],
	'after the release, --pool * 2 parallel callbacks all answer 200');
ok(!grep({ !$_ || !$_->{applied} } @$res), 'and all are applied');
$fig{requests} += @$res;
$fig{ok} += grep { $_ && $_->{status} == 200 } @$res;

# The senders' retries of the locked job's deliveries: one applies, the
# others are no-ops of the same transition, none a duplicate.
my @retry;
for my $name ('a', 'b')
{
	my $n = $name eq 'a' ? $pool / 2 : $pool * 2;
	push @retry, once({ job_id => $ljob, status => 'provisioning' }, "pool-lock-$name-$_")
	  for 0 .. $n - 1;
}
is(scalar(grep { $_->{status} == 200 } @retry), scalar(@retry), 'the retries of the locked job all answer 200');
is(scalar(grep { $_->{applied} } @retry), 1, 'exactly one of them applied');
is(scalar(grep { $_->{duplicate} } @retry), 0, 'none was a duplicate (the 503s recorded nothing)');
is_deeply([ map { $_->{kind} } @{ ProvisionTest::events_for_job($node, $ljob) } ],
	[ 'enqueued', 'status' ], 'the locked job moved once');
$fig{requests} += @retry;
$fig{ok} += grep { $_->{status} == 200 } @retry;

my $m = $l->metrics;
is(ProvisionTest::metric_sum($m, 'provision_db_pool_size'), $pool, 'pool size unchanged');
is(ProvisionTest::metric_sum($m, 'provision_db_pool_in_use'), 0, 'no connection left in use');
note(sprintf('pool figures: requests sent %d, 200s %d, 503s %d, retries %d, delivery rows %s, events %s',
	$fig{requests}, $fig{ok}, $fig{s503}, scalar(@retry),
	ProvisionTest::query_scalar($node, 'SELECT count(*) FROM provision.callback_deliveries'),
	ProvisionTest::query_scalar($node, 'SELECT count(*) FROM provision.events')));

done_testing();
