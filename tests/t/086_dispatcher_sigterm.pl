
# SIGTERM and SIGINT: the call in flight is finished and its answer
# recorded, nothing more is claimed, and the exit status is 0. A job
# waiting for a retry is left to reconciliation; an answer that cannot be
# recorded because the database is down is given up after
# --shutdown-timeout, and its run adopted later.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;
use DispatcherTest;

my $node = ProvisionTest::new_node('main');
my $gh = FakeGitHub->new(tokens => [$DispatcherTest::TOKEN]);

sub dispatches_for
{
	my ($job) = @_;
	return grep { $_->{json} && ($_->{json}{inputs}{job_id} // '') eq $job }
	  $gh->requests(endpoint => 'dispatch');
}

for my $sig ('TERM', 'INT')
{
	$gh->script({ endpoint => 'dispatch', delay => 2 });
	my $d = DispatcherTest::start_dispatcher(node => $node, github => $gh,
		args => [ '--batch', 1, '--log-format', 'json' ]);
	my ($a1, $job1) = ProvisionTest::new_job($node);
	ProvisionTest::wait_until(sub { dispatches_for($job1) });
	my ($a2, $job2) = ProvisionTest::new_job($node);
	my $t0 = time();
	$d->signal($sig);
	my $code = $d->wait_exit;
	my $took = time() - $t0;
	is($code, 0, "SIG$sig during a call: exit 0");
	ok($took >= 1.5, sprintf('after the call in flight finished (%.1f s)', $took));
	my $row = ProvisionTest::job_row($node, $job1);
	ok(defined $row->{workflow_run_id}, 'its answer was recorded');
	my ($run) = grep { $_->{job_id} eq $job1 } $gh->runs;
	is($row->{workflow_run_id}, $run->{id}, 'the run GitHub started');
	is(ProvisionTest::job_row($node, $job2)->{status}, 'pending', 'nothing more was claimed');
	is(scalar dispatches_for($job2), 0, 'nor sent');
	my $log = $d->log_content;
	like($log, qr/stopping: claiming nothing more/, 'the stop is logged');
	like($log, qr/"msg":"stopped"/, 'and its end');

	# the next dispatcher takes the pending job
	$d = DispatcherTest::start_dispatcher(node => $node, github => $gh);
	ok(defined DispatcherTest::wait_for_run($node, $job2)->{workflow_run_id},
		'the job left pending is dispatched by the next one');
	is($d->stop, 0, 'SIGTERM when idle: exit 0');
}

# a job waiting for its retry is not waited for
$gh->script({ endpoint => 'dispatch', status => 503, body => { message => 'Unavailable' },
		times => 1 });
my $d = DispatcherTest::start_dispatcher(node => $node, github => $gh,
	args => [ '--log-format', 'json' ]);
my ($agent, $job) = ProvisionTest::new_job($node);
ProvisionTest::wait_until(sub { grep { $_->{job_id} eq $job } $d->dispatch_lines });
my $t0 = time();
is($d->stop, 0, 'SIGTERM with a job in backoff: exit 0');
ok(time() - $t0 < 2, 'at once');
like($d->log_content, qr/1 claimed jobs not dispatched \(yet\): left to reconciliation/,
	'the job is left to reconciliation, and the log says so');
$node->safe_psql('provision',
	"UPDATE provision.provisioning_jobs SET dispatched_at = now() - interval '150 seconds' WHERE id = '$job'");
$d = DispatcherTest::start_dispatcher(node => $node, github => $gh);
ok(defined DispatcherTest::wait_for_run($node, $job)->{workflow_run_id},
	'and reconciliation sends it');
is($d->stop, 0, 'SIGTERM: exit 0');

# the database is down when the answer comes: given up after --shutdown-timeout
$gh->script({ endpoint => 'dispatch', delay => 2 });
$d = DispatcherTest::start_dispatcher(node => $node, github => $gh,
	args => [ '--shutdown-timeout', '2s' ]);
($agent, $job) = ProvisionTest::new_job($node);
ProvisionTest::wait_until(sub { dispatches_for($job) });
$node->stop('immediate');
$t0 = time();
$d->signal('TERM');
is($d->wait_exit, 0, 'SIGTERM with the database down: exit 0');
my $took = time() - $t0;
ok($took >= 3 && $took < 10, sprintf('after the call and --shutdown-timeout (%.1f s)', $took));
like($d->log_content, qr/1 answers not recorded within the shutdown timeout/,
	'the unrecorded answer is logged');
$node->start;
is(ProvisionTest::job_row($node, $job)->{workflow_run_id}, undef, 'the run was not recorded');
$node->safe_psql('provision',
	"UPDATE provision.provisioning_jobs SET dispatched_at = now() - interval '90 seconds' WHERE id = '$job'");
$d = DispatcherTest::start_dispatcher(node => $node, github => $gh);
my $row = DispatcherTest::wait_for_run($node, $job);
my ($run) = grep { $_->{job_id} eq $job } $gh->runs;
is($row->{workflow_run_id}, $run->{id}, 'the next dispatcher adopts the run');
is(scalar dispatches_for($job), 1, 'without dispatching again');
is($d->stop, 0, 'SIGTERM: exit 0');

done_testing();
