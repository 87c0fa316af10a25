
# Crash safety: a claim commits before the API call, so a dispatcher killed
# between the two leaves a dispatched job without a run. On start and every
# poll, dispatched jobs without a run older than a minute are looked up on
# GitHub (workflow_dispatch runs created since the job was dispatched) and
# the run whose title holds the job id is adopted; with none after two
# minutes the job is dispatched once more. A job another live dispatcher is
# working on is left alone (its advisory lock), until that dispatcher dies.
#
# Ages are made by moving dispatched_at back, as a DBA could: the minute
# and the two minutes are the dispatcher's, unchanged.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;
use DispatcherTest;

my $node = ProvisionTest::new_node('main');
my $gh = FakeGitHub->new(tokens => [$DispatcherTest::TOKEN]);

sub age_job
{
	my ($job, $seconds) = @_;
	$node->safe_psql('provision',
		"UPDATE provision.provisioning_jobs SET dispatched_at = now() - interval '$seconds seconds' "
		  . "WHERE id = '$job'");
}

sub dispatches_for
{
	my ($job) = @_;
	return grep { $_->{json} && ($_->{json}{inputs}{job_id} // '') eq $job }
	  $gh->requests(endpoint => 'dispatch');
}

sub reconcile_lines
{
	my ($d, $job) = @_;
	return grep { ($_->{msg} // '') eq 'reconcile' && $_->{job_id} eq $job } $d->log_lines;
}

# ---- killed after GitHub started the run: the run is adopted ------------------

$gh->script({ endpoint => 'dispatch', hang => 1, create_run => 1 });
my $d = DispatcherTest::start_dispatcher(node => $node, github => $gh);
my ($agent, $job) = ProvisionTest::new_job($node);
ProvisionTest::wait_until(sub { dispatches_for($job) });
$d->kill9;
my $row = ProvisionTest::job_row($node, $job);
is($row->{status}, 'dispatched', 'killed during the call: the job is dispatched');
is($row->{workflow_run_id}, undef, 'without a run');
my ($run) = $gh->runs;
ok($run, 'GitHub started a run all the same');

# younger than a minute: not looked at
$d = DispatcherTest::start_dispatcher(node => $node, github => $gh, metrics => 1,
	args => [ '--log-format', 'json' ]);
sleep(1.5);
is(scalar $gh->requests(endpoint => 'runs'), 0, 'a job dispatched less than a minute ago is not looked up');
$d->stop;

age_job($job, 90);
my $t0 = time();
$d = DispatcherTest::start_dispatcher(node => $node, github => $gh, metrics => 1,
	args => [ '--log-format', 'json' ]);
$row = DispatcherTest::wait_for_run($node, $job);
is($row->{workflow_run_id}, $run->{id}, 'on start the run GitHub has for the job is adopted');
is($row->{workflow_run_url}, $run->{html_url}, 'with its URL');
is(scalar dispatches_for($job), 1, 'and the job is not dispatched again');
my ($list) = $gh->requests(endpoint => 'runs');
is($list->{path}, '/repos/acme/agents/actions/workflows/provision.yml/runs', 'the workflow\'s runs were listed');
is($list->{query}{event}, 'workflow_dispatch', 'workflow_dispatch runs');
is($list->{query}{per_page}, 100, '100 a page');
my ($since) = ($list->{query}{created} // '') =~ /^>=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)$/;
ok($since, 'created since a time: ' . ($list->{query}{created} // 'none'));
my $dispatched = ProvisionTest::query_scalar($node,
	"SELECT to_char(dispatched_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
	  . "FROM provision.provisioning_jobs WHERE id = '$job'");
ok($since le $dispatched, "not after the job's dispatched_at ($since <= $dispatched)");
my ($line) = reconcile_lines($d, $job);
is($line->{action}, 'adopted', 'logged: adopted');
is($line->{run_id}, $run->{id}, 'logged: the run');
is(ProvisionTest::metric_sum($d->metrics, 'provision_dispatcher_reconciled_jobs_total',
		{ action => 'adopted' }), 1, 'metrics: one adopted');
my @run_events = grep { $_->{kind} eq 'run' } @{ ProvisionTest::events_for_job($node, $job) };
is(scalar @run_events, 1, 'one run event');
$d->stop;

# ---- killed before GitHub got the call: dispatched once more -----------------

$gh->script({ endpoint => 'dispatch', hang => 1 });
$d = DispatcherTest::start_dispatcher(node => $node, github => $gh);
($agent, $job) = ProvisionTest::new_job($node);
ProvisionTest::wait_until(sub { dispatches_for($job) });
# (hung before answering, nothing created: as if the call never arrived)
$d->kill9;
my $runs_before = scalar $gh->runs;

age_job($job, 90);
$d = DispatcherTest::start_dispatcher(node => $node, github => $gh, metrics => 1,
	args => [ '--log-format', 'json' ]);
my $lists = scalar $gh->requests(endpoint => 'runs');
ProvisionTest::wait_until(sub { $gh->requests(endpoint => 'runs') > $lists + 1 });
is(scalar dispatches_for($job), 1, 'no run yet, a minute and a half on: not dispatched again yet');
is(ProvisionTest::job_row($node, $job)->{workflow_run_id}, undef, 'nothing adopted');

age_job($job, 150);
$row = DispatcherTest::wait_for_run($node, $job);
my @calls = dispatches_for($job);
is(scalar @calls, 2, 'no run after two minutes: dispatched exactly once more');
my ($new_run) = grep { $_->{job_id} eq $job } $gh->runs;
is($row->{workflow_run_id}, $new_run->{id}, 'and its run recorded');
is(scalar $gh->runs, $runs_before + 1, 'one run for the job in all');
($line) = reconcile_lines($d, $job);
is($line->{action}, 'resend', 'logged: resend');
ok($line->{dispatched_s_ago} >= 120, 'with the age');
my ($dl) = grep { $_->{job_id} eq $job } $d->dispatch_lines;
is($dl->{reconciled}, 'true', 'the dispatch line says it came from reconciliation');
is(ProvisionTest::metric_sum($d->metrics, 'provision_dispatcher_reconciled_jobs_total',
		{ action => 'resent' }), 1, 'metrics: one resent');
sleep(1.5);
is(scalar dispatches_for($job), 2, 'and not again');
$d->stop;

# ---- 204: the run is found by its title -------------------------------------------

$gh->set(run_details => 'ignore');
$d = DispatcherTest::start_dispatcher(node => $node, github => $gh,
	args => [ '--log-format', 'json' ]);
($agent, $job) = ProvisionTest::new_job($node);
ProvisionTest::wait_until(sub { grep { $_->{job_id} eq $job } $d->dispatch_lines });
is(ProvisionTest::job_row($node, $job)->{workflow_run_id}, undef, '204: dispatched without a run');
age_job($job, 70);
$row = DispatcherTest::wait_for_run($node, $job);
($run) = grep { $_->{job_id} eq $job } $gh->runs;
is($row->{workflow_run_id}, $run->{id}, 'a minute on, the same dispatcher adopts its run');
is(scalar dispatches_for($job), 1, 'one dispatch');

# a workflow whose run-name does not hold the job id: never found, and
# this dispatcher waits two minutes after its own call before sending again
$gh->set(run_title => 'provision');
($agent, $job) = ProvisionTest::new_job($node);
ProvisionTest::wait_until(sub { grep { $_->{job_id} eq $job } $d->dispatch_lines });
age_job($job, 150);
$lists = scalar $gh->requests(endpoint => 'runs');
ProvisionTest::wait_until(sub { $gh->requests(endpoint => 'runs') > $lists + 1 });
is(scalar dispatches_for($job), 1,
	'sent by this dispatcher moments ago: not sent again, however old dispatched_at is');
$d->stop;
$gh->set(run_details => 'answer', run_title => 'provision {job_id}');

# ---- two dispatchers: a job one of them holds is left to it --------------------

$gh->script({ endpoint => 'dispatch', status => 503, body => { message => 'Unavailable' },
		times => 1000 });
my $d1 = DispatcherTest::start_dispatcher(node => $node, github => $gh,
	args => [ '--log-format', 'json' ]);
($agent, $job) = ProvisionTest::new_job($node);
ProvisionTest::wait_until(sub { grep { $_->{job_id} eq $job } $d1->dispatch_lines });
age_job($job, 200);
my $d2 = DispatcherTest::start_dispatcher(node => $node, github => $gh,
	args => [ '--log-format', 'json' ]);
sleep(3);
is(scalar(grep { $_->{job_id} eq $job } $d2->log_lines), 0,
	'a job another dispatcher is retrying is not reconciled (its advisory lock)');
ok(scalar(grep { $_->{job_id} eq $job } $d1->dispatch_lines) >= 2, 'the first keeps retrying it');

$d1->kill9;
$gh->clear_script;
$row = DispatcherTest::wait_for_run($node, $job);
ok(defined $row->{workflow_run_id}, 'once that dispatcher is gone, the other takes the job over');
($line) = reconcile_lines($d2, $job);
is($line->{action}, 'resend', 'and sends it');
is($d2->stop, 0, 'SIGTERM: exit 0');

done_testing();
