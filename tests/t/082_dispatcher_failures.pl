
# GitHub's refusals and failures: 401, 404 and other 4xx fail the job with
# "dispatch: HTTP <code>: <GitHub's message>" (and retry_failed_jobs, called
# on every poll, enqueues the next attempt); 403/429 rate limits pause all
# calls until x-ratelimit-reset or retry-after and fail no job; 5xx,
# timeouts and refused connections are retried with backoff and fail the
# job only after --give-up seconds.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;
use DispatcherTest;

my $node = ProvisionTest::new_node('main');
my $gh = FakeGitHub->new(tokens => [$DispatcherTest::TOKEN]);

sub lines_for
{
	my ($d, $job) = @_;
	return grep { $_->{job_id} eq $job } $d->dispatch_lines;
}

sub dispatches_for
{
	my ($job) = @_;
	return grep { $_->{json} && ($_->{json}{inputs}{job_id} // '') eq $job }
	  $gh->requests(endpoint => 'dispatch');
}

# ---- refusals fail the job ----------------------------------------------------

my $d = DispatcherTest::start_dispatcher(node => $node, github => $gh, metrics => 1,
	token => 'ghp_revoked', args => [ '--log-format', 'json' ]);
my ($agent, $job) = ProvisionTest::new_job($node);
my $row = DispatcherTest::wait_for_status($node, $job, 'failed');
is($row->{status}, 'failed', '401: the job is failed');
is($row->{error}, 'dispatch: HTTP 401: Bad credentials', '401: error names the status and GitHub\'s message');
is(ProvisionTest::agent_row($node, $agent)->{status}, 'failed', 'the agent is failed');
is(scalar dispatches_for($job), 1, '401: not retried');
my ($line) = lines_for($d, $job);
is($line->{outcome}, 'failed', '401: logged as failed');
is($line->{level}, 'error', '401: at level error');
is($line->{status}, 401, '401: with the status');
is($line->{error}, 'dispatch: HTTP 401: Bad credentials', '401: and the error');
is(ProvisionTest::metric_sum($d->metrics, 'provision_dispatcher_dispatches_total',
		{ outcome => 'failed' }), 1, '401: metrics count a failed dispatch');
is($d->stop, 0, 'SIGTERM: exit 0');

# 404: the workflow does not exist (or the token cannot see it).
$d = DispatcherTest::start_dispatcher(node => $node, github => $gh,
	args => [ '--workflow', 'missing.yml' ]);
($agent, $job) = ProvisionTest::new_job($node);
$row = DispatcherTest::wait_for_status($node, $job, 'failed');
is($row->{error}, 'dispatch: HTTP 404: Not Found', '404: the job is failed with GitHub\'s message');
is($d->stop, 0, 'SIGTERM: exit 0');

# 422 and 403 that is no rate limit, scripted.
$d = DispatcherTest::start_dispatcher(node => $node, github => $gh);
$gh->script({ endpoint => 'dispatch', status => 422,
		body => { message => "Unexpected inputs provided: [\"agent_id\"]" } });
($agent, $job) = ProvisionTest::new_job($node);
$row = DispatcherTest::wait_for_status($node, $job, 'failed');
is($row->{error}, 'dispatch: HTTP 422: Unexpected inputs provided: ["agent_id"]',
	'422: failed with GitHub\'s message');
$gh->script({ endpoint => 'dispatch', status => 403,
		headers => { 'x-ratelimit-remaining' => 4999 },
		body => { message => 'Resource not accessible by integration' } });
($agent, $job) = ProvisionTest::new_job($node);
$row = DispatcherTest::wait_for_status($node, $job, 'failed');
is($row->{error}, 'dispatch: HTTP 403: Resource not accessible by integration',
	'403 that is no rate limit: failed');
is($d->stop, 0, 'SIGTERM: exit 0');

# retry_failed_jobs on every poll: with a short retry delay the failed
# job's agent gets a new job, which is dispatched once the token works.
$node->safe_psql('provision', "ALTER DATABASE provision SET provision.retry_delay = '1s'");
$gh->set(tokens => ['ghp_fixed']);
$d = DispatcherTest::start_dispatcher(node => $node, github => $gh, token => 'ghp_broken',
	args => [ '--log-format', 'json' ]);
($agent, $job) = ProvisionTest::new_job($node);
DispatcherTest::wait_for_status($node, $job, 'failed');
is($d->stop, 0, 'SIGTERM: exit 0');
$d = DispatcherTest::start_dispatcher(node => $node, github => $gh, token => 'ghp_fixed',
	args => [ '--log-format', 'json' ]);
my $retry;
ProvisionTest::wait_until(sub {
	$retry = ProvisionTest::query_scalar($node,
		"SELECT id FROM provision.provisioning_jobs WHERE idempotency_key = 'retry:$job'");
	return $retry && ProvisionTest::job_row($node, $retry)->{workflow_run_id};
});
ok($retry, 'retry_failed_jobs enqueued a new job for the agent (key retry:<failed job>)');
$row = ProvisionTest::job_row($node, $retry);
is($row->{agent_id}, $agent, 'for the same agent');
ok(defined $row->{workflow_run_id}, 'and the dispatcher dispatched it');
like($d->log_content, qr/provision\.retry_failed_jobs enqueued \d+ new jobs/, 'the retry is logged');
is($d->stop, 0, 'SIGTERM: exit 0');
$node->safe_psql('provision', 'ALTER DATABASE provision RESET provision.retry_delay');
$gh->set(tokens => [$DispatcherTest::TOKEN]);

# ---- rate limits pause, and fail nothing ----------------------------------------

$d = DispatcherTest::start_dispatcher(node => $node, github => $gh, metrics => 1,
	args => [ '--log-format', 'json', '--batch', 1 ]);
my $reset = int(time()) + 4;
$gh->script({ endpoint => 'dispatch', status => 403,
		headers => { 'x-ratelimit-remaining' => 0, 'x-ratelimit-limit' => 5000,
			'x-ratelimit-reset' => $reset },
		body => { message => 'API rate limit exceeded for user ID 1.' } });
my @before = $gh->requests(endpoint => 'dispatch');
($agent, $job) = ProvisionTest::new_job($node);
my (undef, $job2) = ProvisionTest::new_job($node);
ProvisionTest::wait_until(sub { grep { $_->{outcome} eq 'rate_limited' } lines_for($d, $job) });
my $paused_at = time();
($line) = lines_for($d, $job);
is($line->{outcome}, 'rate_limited', '403 with x-ratelimit-remaining 0: paused');
is($line->{level}, 'warning', 'at level warning');
like($d->log_content, qr/GitHub rate limit: no API call until/, 'the pause is logged');
is(ProvisionTest::job_row($node, $job)->{status}, 'dispatched', 'the job is not failed');
my $m = $d->metrics;
is(ProvisionTest::metric_sum($m, 'provision_dispatcher_rate_limited', {}), 1, 'gauge: paused');
is(ProvisionTest::metric_sum($m, 'provision_dispatcher_rate_limit_pauses_total', {}), 1,
	'one pause counted');
is(ProvisionTest::job_row($node, $job2)->{status}, 'pending',
	'no job is claimed during the pause');
$row = DispatcherTest::wait_for_run($node, $job, timeout => 15);
my @calls = dispatches_for($job);
is(scalar @calls, 2, 'after the reset the job is sent once more');
ok($calls[1]{time} >= $reset - 0.05, sprintf('not before x-ratelimit-reset (%.2f s after it)',
		$calls[1]{time} - $reset));
ok(defined $row->{workflow_run_id}, 'and recorded');
ok(defined DispatcherTest::wait_for_run($node, $job2)->{workflow_run_id}, 'then the next job');
is(ProvisionTest::metric_sum($d->metrics, 'provision_dispatcher_rate_limited', {}), 0,
	'gauge: no longer paused');

# a secondary rate limit: 429 with retry-after
$gh->script({ endpoint => 'dispatch', status => 429, headers => { 'retry-after' => 3 },
		body => { message => 'You have exceeded a secondary rate limit.' } });
($agent, $job) = ProvisionTest::new_job($node);
ProvisionTest::wait_until(sub { grep { $_->{outcome} eq 'rate_limited' } lines_for($d, $job) });
my $limited_at = time();
$row = DispatcherTest::wait_for_run($node, $job, timeout => 15);
@calls = dispatches_for($job);
is(scalar @calls, 2, '429: sent once more');
ok($calls[1]{time} - $calls[0]{time} >= 2.9,
	sprintf('after retry-after (%.2f s later)', $calls[1]{time} - $calls[0]{time}));
is($row->{status}, 'dispatched', '429: never failed');
is(ProvisionTest::metric_sum($d->metrics, 'provision_dispatcher_rate_limit_pauses_total', {}), 2,
	'two pauses counted');
is($d->stop, 0, 'SIGTERM: exit 0');

# ---- transient failures: retried with backoff, failed after --give-up ------

$d = DispatcherTest::start_dispatcher(node => $node, github => $gh, metrics => 1,
	args => [ '--log-format', 'json' ]);
$gh->script({ endpoint => 'dispatch', status => 502, body => { message => 'Server Error' },
		times => 2 });
($agent, $job) = ProvisionTest::new_job($node);
$row = DispatcherTest::wait_for_run($node, $job, timeout => 20);
@calls = dispatches_for($job);
is_deeply([ map { $_->{status} } @calls ], [ 502, 502, 200 ], '502 twice, then accepted');
my $gap1 = $calls[1]{time} - $calls[0]{time};
my $gap2 = $calls[2]{time} - $calls[1]{time};
ok($gap1 >= 0.45 && $gap1 <= 1.5, sprintf('first retry after 0.5 to 1 s (%.2f)', $gap1));
ok($gap2 >= 0.95 && $gap2 <= 2.5, sprintf('second after 1 to 2 s (%.2f)', $gap2));
my @l = lines_for($d, $job);
is_deeply([ map { $_->{outcome} } @l ], [ 'retry', 'retry', 'run' ], 'logged: retry, retry, run');
is_deeply([ map { $_->{attempt} } @l ], [ 1, 2, 3 ], 'attempts 1, 2, 3');
is($l[0]{error}, 'HTTP 502: Server Error', 'the retry says what failed');
is(ProvisionTest::metric_sum($d->metrics, 'provision_dispatcher_retries_total', {}), 2,
	'metrics: two retries');
is($d->stop, 0, 'SIGTERM: exit 0');

$d = DispatcherTest::start_dispatcher(node => $node, github => $gh,
	args => [ '--log-format', 'json', '--give-up', 3 ]);
$gh->script({ endpoint => 'dispatch', status => 503, body => { message => 'Unavailable' },
		times => 100 });
my $t0 = time();
($agent, $job) = ProvisionTest::new_job($node);
$row = DispatcherTest::wait_for_status($node, $job, 'failed', timeout => 20);
my $took = time() - $t0;
like($row->{error},
	qr/^dispatch: gave up after [34] s of transient failures; last: HTTP 503: Unavailable$/,
	'--give-up 3: failed, naming the last failure');
ok($took >= 3, sprintf('not before --give-up (%.1f s)', $took));
@calls = dispatches_for($job);
ok(@calls >= 3 && @calls <= 6, sprintf('retried with backoff (%d calls)', scalar @calls));
@l = lines_for($d, $job);
is($l[-1]{outcome}, 'gave_up', 'the last line says gave_up');
is($l[-1]{level}, 'error', 'at level error');
$gh->clear_script;
is($d->stop, 0, 'SIGTERM: exit 0');

# No server at all (connection refused): transient too.
my $closed = PostgreSQL::Test::Cluster::get_free_port();
$d = DispatcherTest::start_dispatcher(node => $node,
	args => [ '--log-format', 'json', '--give-up', 2, '--api', "http://127.0.0.1:$closed" ]);
($agent, $job) = ProvisionTest::new_job($node);
$row = DispatcherTest::wait_for_status($node, $job, 'failed', timeout => 20);
like($row->{error}, qr/^dispatch: gave up after \d+ s of transient failures; last: .*(Connection refused|Couldn't connect)/i,
	'connection refused: retried, then failed after --give-up');
is((lines_for($d, $job))[0]{outcome}, 'retry', 'the first failure was retried');
is($d->stop, 0, 'SIGTERM: exit 0');

# A server that does not answer within --request-timeout.
$d = DispatcherTest::start_dispatcher(node => $node, github => $gh,
	args => [ '--log-format', 'json', '--request-timeout', '1s' ]);
$gh->script({ endpoint => 'dispatch', delay => 3, status => 200,
		body => { workflow_run_id => 1, html_url => 'https://github.example/x' } });
($agent, $job) = ProvisionTest::new_job($node);
$row = DispatcherTest::wait_for_run($node, $job, timeout => 20);
($line) = lines_for($d, $job);
is($line->{outcome}, 'retry', 'a timeout: retried');
like($line->{error}, qr/timed out/i, 'the log says it timed out');
ok($line->{duration_s} >= 0.9 && $line->{duration_s} < 2, 'after --request-timeout');
ok(defined $row->{workflow_run_id}, 'the next attempt went through');
is($d->stop, 0, 'SIGTERM: exit 0');

done_testing();
