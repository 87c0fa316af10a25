
# The dispatcher under valgrind memcheck, end to end against the fake
# GitHub: dispatches with a token (run recorded, 422 fallback, 401 failure,
# 503 retried, a rate-limit pause), the metrics endpoints, SIGHUP,
# reconciliation adopting a run, a database restart; then a GitHub App
# (JWT signing, installation token, its renewal after a 401); each ends
# with SIGTERM. Passes when every dispatcher exits 0 and memcheck reports
# no error and no definitely or indirectly lost bytes.  Run by
# tests/valgrind/run.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;
use DispatcherTest;

# Everything is several times slower under valgrind.
$ENV{PROVISION_TEST_TIMEOUT} ||= 120;
$ENV{VALGRIND_DISPATCHER} = DispatcherTest::binary();
$ENV{VALGRIND_LOG_DIR} ||= PostgreSQL::Test::Utils::tempdir();
$ENV{PROVISION_DISPATCHER} =
  File::Spec->catfile(File::Spec->rel2abs(dirname(__FILE__)), 'valgrind-dispatcher');

my $node = ProvisionTest::new_node('valgrind');
my $gh = FakeGitHub->new(tokens => [$DispatcherTest::TOKEN]);
my $token_file = DispatcherTest::write_file("$DispatcherTest::TOKEN\n");
my $d = DispatcherTest::start_dispatcher(node => $node, github => $gh, metrics => 1,
	token => undef, args => [ '--token-file', $token_file, '--give-up', 30 ]);

my ($agent, $job) = ProvisionTest::new_job($node);
ok(defined DispatcherTest::wait_for_run($node, $job)->{workflow_run_id}, 'dispatched, run recorded');

$gh->script({ endpoint => 'dispatch', status => 503, body => { message => 'Unavailable' } });
($agent, $job) = ProvisionTest::new_job($node);
ok(defined DispatcherTest::wait_for_run($node, $job)->{workflow_run_id}, '503, retried, recorded');

$gh->script({ endpoint => 'dispatch', status => 429, headers => { 'retry-after' => 1 } });
($agent, $job) = ProvisionTest::new_job($node);
ok(defined DispatcherTest::wait_for_run($node, $job)->{workflow_run_id}, '429: paused, then recorded');

$gh->script({ endpoint => 'dispatch', status => 404, body => { message => 'Not Found' } });
($agent, $job) = ProvisionTest::new_job($node);
is(DispatcherTest::wait_for_status($node, $job, 'failed')->{error}, 'dispatch: HTTP 404: Not Found',
	'404: failed');

$gh->set(run_details => 'refuse');
($agent, $job) = ProvisionTest::new_job($node);
DispatcherTest::wait_for_job($node, $job,
	sub { grep { ($_->{json}{inputs}{job_id} // '') eq $job && $_->{status} == 204 } $gh->requests });
pass('422 fallback: sent again without run details');
$gh->set(run_details => 'answer');

is($d->get('/healthz')->{status}, 200, 'GET /healthz');
is($d->get('/readyz')->{status},  200, 'GET /readyz');
is($d->get('/metrics')->{status}, 200, 'GET /metrics');
is($d->get('/nope')->{status},    404, 'GET /nope');
my $at = $d->log_size;
$d->signal('HUP');
ok($d->wait_for_log(qr/SIGHUP: credentials re-read/, $at), 'SIGHUP re-reads the token file');

# a run GitHub started for a job whose dispatcher died: adopted
# (enqueued, claimed and aged in one transaction: the dispatcher never sees it pending)
my $orphan = $node->safe_psql('provision', q{
	BEGIN;
	WITH a AS (INSERT INTO provision.agents (name) VALUES ('orphan') RETURNING id)
	SELECT provision.enqueue_job(a.id) FROM a \gset
	SELECT provision.claim_jobs(1);
	UPDATE provision.provisioning_jobs SET dispatched_at = now() - interval '90 seconds'
	 WHERE id = :'enqueue_job';
	COMMIT;
	SELECT :'enqueue_job';
});
$orphan = (split /\n/, $orphan)[-1];
my $run = $gh->add_run(job_id => $orphan, created => time() - 80);
is(DispatcherTest::wait_for_run($node, $orphan)->{workflow_run_id}, $run->{id}, 'orphan adopted');

$node->stop('fast');
sleep(2);
$node->start;
($agent, $job) = ProvisionTest::new_job($node);
ok(defined DispatcherTest::wait_for_run($node, $job)->{workflow_run_id}, 'after a database restart');
is($d->stop(timeout => 120), 0, 'SIGTERM: exit 0 (99 would mean memcheck errors)');

# a GitHub App
my ($key_file, $public_key) = DispatcherTest::app_key();
my $app = FakeGitHub->new(app => { id => 7, installation => 8, public_key => $public_key });
$d = DispatcherTest::start_dispatcher(node => $node, github => $app,
	app => { id => 7, installation => 8, key_file => $key_file });
($agent, $job) = ProvisionTest::new_job($node);
ok(defined DispatcherTest::wait_for_run($node, $job)->{workflow_run_id}, 'App: dispatched');
$app->script({ endpoint => 'dispatch', status => 401, body => { message => 'Bad credentials' } });
($agent, $job) = ProvisionTest::new_job($node);
ok(defined DispatcherTest::wait_for_run($node, $job)->{workflow_run_id}, 'App: 401, renewed, dispatched');
is(scalar $app->requests(endpoint => 'token'), 2, 'two installation tokens');
is($d->stop(timeout => 120), 0, 'SIGTERM: exit 0');

my @reports = glob("$ENV{VALGRIND_LOG_DIR}/dispatcher.*.log");
is(scalar @reports, 2, 'two memcheck reports');
for my $file (@reports)
{
	my $report = slurp_file($file);
	my ($errors) = $report =~ /ERROR SUMMARY: (\d+) errors/;
	my ($definite) = $report =~ /definitely lost: ([\d,]+) bytes/;
	my ($indirect) = $report =~ /indirectly lost: ([\d,]+) bytes/;
	is($errors, 0, 'memcheck: 0 errors');
	is($definite // 0, 0, 'memcheck: 0 bytes definitely lost');
	is($indirect // 0, 0, 'memcheck: 0 bytes indirectly lost');
	diag($report) if ($errors // 1) || ($definite // 0) || ($indirect // 0);
	note("memcheck report $file:\n"
		  . join('', grep { /SUMMARY|lost:|reachable:|suppressed:/ } split /^/, $report));
}

done_testing();
