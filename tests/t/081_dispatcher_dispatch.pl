
# A dispatch end to end: the request GitHub gets (path, headers, body),
# the run recorded on the job (workflow_run_id, workflow_run_url, one run
# event), the log line, the metrics; a NOTIFY of a new job wakes the
# dispatcher at once; 204 (no run details) and the 422 fallback for
# servers that refuse return_run_details, each recorded without a run; the
# token from a file and re-read on SIGHUP; HTTPS with --ca-file, and a
# certificate the dispatcher does not trust counted as a transient failure.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;
use DispatcherTest;

my $node = ProvisionTest::new_node('main');
my $gh = FakeGitHub->new(tokens => [$DispatcherTest::TOKEN]);

# --poll 60: only the notification can make it claim quickly
my $d = DispatcherTest::start_dispatcher(node => $node, github => $gh, metrics => 1,
	poll => 60, args => [ '--log-format', 'json', '--ref', 'v1.0.0' ]);
is($d->get('/healthz')->{status}, 200, '/healthz 200');
ProvisionTest::wait_until(sub { $d->get('/readyz')->{status} == 200 });
my $ready = $d->get('/readyz');
is($ready->{status}, 200, '/readyz 200 with the database up');
is_deeply($ready->{json}, { status => 'ready' }, '/readyz body');
is($d->get('/nope')->{status}, 404, 'unknown path 404');
my $post = $d->request('POST', '/metrics');
is($post->{status}, 405, 'POST /metrics 405');
is($post->{headers}{allow}, 'GET, HEAD', 'with Allow');

my $t0 = time();
my ($agent, $job) = ProvisionTest::new_job($node);
my $row = DispatcherTest::wait_for_run($node, $job, timeout => 10);
my $took = time() - $t0;
ok($took < 5, sprintf('dispatched %.1f s after the enqueue, long before the 60 s poll', $took));

my @calls = $gh->requests(endpoint => 'dispatch');
is(scalar @calls, 1, 'one dispatch request');
my $c = $calls[0];
is($c->{method}, 'POST', 'POST');
is($c->{path}, '/repos/acme/agents/actions/workflows/provision.yml/dispatches',
	'to the workflow of the repository');
is($c->{headers}{accept}, 'application/vnd.github+json', 'Accept');
is($c->{headers}{'x-github-api-version'}, '2022-11-28', 'X-GitHub-Api-Version');
is($c->{headers}{'user-agent'}, "provision-dispatcher/$ProvisionTest::EXTVERSION", 'User-Agent');
is($c->{headers}{authorization}, "Bearer $DispatcherTest::TOKEN", 'Authorization: Bearer');
like($c->{headers}{'content-type'}, qr{^application/json}, 'Content-Type');
is_deeply($c->{json},
	{ ref => 'v1.0.0', inputs => { job_id => $job, agent_id => $agent }, return_run_details => JSON::PP::true },
	'body: ref, inputs job_id and agent_id, return_run_details');

my ($run) = $gh->runs;
is($row->{status}, 'dispatched', 'the job is dispatched');
is($row->{workflow_run_id}, $run->{id}, 'workflow_run_id is the run GitHub started');
is($row->{workflow_run_url}, $run->{html_url}, 'workflow_run_url its html_url');
my @run_events = grep { $_->{kind} eq 'run' } @{ ProvisionTest::events_for_job($node, $job) };
is(scalar @run_events, 1, 'one run event');

my ($line) = $d->dispatch_lines;
is($line->{job_id}, $job, 'log: job_id');
is($line->{status}, 200, 'log: status, a number');
is($line->{run_id}, $run->{id}, 'log: run_id');
is($line->{attempt}, 1, 'log: attempt');
is($line->{outcome}, 'run', 'log: outcome');
ok($line->{duration_s} >= 0 && $line->{duration_s} < 5, 'log: duration_s');
is($line->{level}, 'info', 'log: level info');

my $m = $d->metrics;
is(ProvisionTest::metric_sum($m, 'provision_dispatcher_dispatches_total', { outcome => 'run' }),
	1, 'metrics: one dispatch with a run');
is(ProvisionTest::metric_sum($m, 'provision_dispatcher_api_requests_total',
		{ endpoint => 'dispatch', code => '200' }), 1, 'metrics: one 200 from the dispatch endpoint');
is(ProvisionTest::metric_sum($m, 'provision_dispatcher_api_request_duration_seconds_count',
		{ endpoint => 'dispatch' }), 1, 'metrics: the latency histogram counted it');
is(ProvisionTest::metric_sum($m, 'provision_dispatcher_held_jobs', {}), 0, 'metrics: no job held');

# Several jobs in a row, each announced by its notification.
my @jobs = map { (ProvisionTest::new_job($node))[1] } 1 .. 3;
DispatcherTest::wait_for_run($node, $_, timeout => 10) for @jobs;
my %per_job;
$per_job{ $_->{json}{inputs}{job_id} }++ for $gh->requests(endpoint => 'dispatch');
is_deeply([ map { $per_job{$_} } @jobs ], [ 1, 1, 1 ], 'three more jobs, one dispatch each');
is($d->stop, 0, 'SIGTERM: exit 0');

# 204: GitHub Enterprise Server that ignores return_run_details.
$gh->set(run_details => 'ignore');
$d = DispatcherTest::start_dispatcher(node => $node, github => $gh, metrics => 1,
	args => [ '--log-format', 'json' ]);
($agent, $job) = ProvisionTest::new_job($node);
my @before = $gh->requests(endpoint => 'dispatch');
ProvisionTest::wait_until(sub { grep { $_->{job_id} eq $job } $d->dispatch_lines });
($line) = grep { $_->{job_id} eq $job } $d->dispatch_lines;
is($line->{status}, 204, '204: logged');
is($line->{outcome}, 'no_run', '204: recorded without a run');
ok(!exists $line->{error}, '204: no error in the line');
$row = ProvisionTest::job_row($node, $job);
is($row->{status}, 'dispatched', '204: the job stays dispatched');
is($row->{workflow_run_id}, undef, '204: no run recorded (fencing happens at its first callback)');
is(scalar $gh->requests(endpoint => 'dispatch'), @before + 1, '204: one request, not repeated');
is($d->stop, 0, 'SIGTERM: exit 0');

# 422 naming return_run_details: sent once more without it, and from then
# on without it.
$gh->set(run_details => 'refuse');
$d = DispatcherTest::start_dispatcher(node => $node, github => $gh, metrics => 1,
	args => [ '--log-format', 'json' ]);
@before = $gh->requests(endpoint => 'dispatch');
($agent, $job) = ProvisionTest::new_job($node);
ProvisionTest::wait_until(sub { grep { $_->{job_id} eq $job && $_->{outcome} eq 'no_run' } $d->dispatch_lines });
my @new = $gh->requests(endpoint => 'dispatch');
splice(@new, 0, scalar @before);
is(scalar @new, 2, '422 fallback: two requests');
is($new[0]{status}, 422, 'the first, with return_run_details, refused');
ok($new[0]{json}{return_run_details}, 'the first asked for run details');
is($new[1]{status}, 204, 'the second accepted');
ok(!exists $new[1]{json}{return_run_details}, 'the second without return_run_details');
is($new[1]{json}{inputs}{job_id}, $job, 'for the same job');
my @lines = grep { $_->{job_id} eq $job } $d->dispatch_lines;
is_deeply([ map { $_->{outcome} } @lines ], [ 'fallback', 'no_run' ], 'logged: fallback, then no_run');
is_deeply([ map { $_->{attempt} } @lines ], [ 1, 2 ], 'attempts 1 and 2');
like($d->log_content, qr/does not take return_run_details/, 'the fallback is explained once');
is(ProvisionTest::job_row($node, $job)->{workflow_run_id}, undef, 'recorded without a run');
is(ProvisionTest::job_row($node, $job)->{status}, 'dispatched', 'the job is not failed');

($agent, $job) = ProvisionTest::new_job($node);
ProvisionTest::wait_until(sub { grep { $_->{job_id} eq $job && $_->{outcome} eq 'no_run' } $d->dispatch_lines });
my ($next) = grep { $_->{json}{inputs}{job_id} eq $job } $gh->requests(endpoint => 'dispatch');
ok(!exists $next->{json}{return_run_details}, 'the next job is sent without it at once');
is(scalar(grep { $_->{json}{inputs}{job_id} eq $job } $gh->requests(endpoint => 'dispatch')), 1,
	'in one request');
$m = $d->metrics;
is(ProvisionTest::metric_sum($m, 'provision_dispatcher_dispatches_total', { outcome => 'fallback' }),
	1, 'metrics: one fallback');
is(ProvisionTest::metric_sum($m, 'provision_dispatcher_dispatches_total', { outcome => 'no_run' }),
	2, 'metrics: two dispatches without a run');
is($d->stop, 0, 'SIGTERM: exit 0');
$gh->set(run_details => 'answer');

# The token from a file, re-read on SIGHUP.
my $token_file = DispatcherTest::write_file("ghp_first\n");
$gh->set(tokens => ['ghp_first']);
$d = DispatcherTest::start_dispatcher(node => $node, github => $gh, token => undef,
	args => [ '--token-file', $token_file ]);
($agent, $job) = ProvisionTest::new_job($node);
DispatcherTest::wait_for_run($node, $job);
open(my $fh, '>', $token_file) or die;
print $fh "ghp_second\n";
close $fh;
$gh->set(tokens => ['ghp_second']);
my $at = $d->log_size;
$d->signal('HUP');
ok($d->wait_for_log(qr/SIGHUP: credentials re-read from \Q$token_file\E/, $at), 'SIGHUP: re-read');
($agent, $job) = ProvisionTest::new_job($node);
$row = DispatcherTest::wait_for_run($node, $job);
ok(defined $row->{workflow_run_id}, 'dispatched with the new token');
my ($last) = reverse $gh->requests(endpoint => 'dispatch');
is($last->{headers}{authorization}, 'Bearer ghp_second', 'the new token was sent');
open($fh, '>', $token_file) or die;
close $fh;
$at = $d->log_size;
$d->signal('HUP');
ok($d->wait_for_log(qr/SIGHUP: keeping the credentials in use: invalid token file .*: the token is empty/, $at),
	'an empty token file is refused; the token in use is kept');
ok($d->running, 'and the dispatcher goes on');
($agent, $job) = ProvisionTest::new_job($node);
ok(defined DispatcherTest::wait_for_run($node, $job)->{workflow_run_id}, 'still dispatching');
unlike($d->log_content, qr/ghp_first|ghp_second/, 'no token in the log');
is($d->stop, 0, 'SIGTERM: exit 0');

# HTTPS: the test CA given with --ca-file.
my $tls = FakeGitHub->new(tokens => [$DispatcherTest::TOKEN], tls => 1);
like($tls->url, qr{^https://}, 'the fake serves HTTPS');
$d = DispatcherTest::start_dispatcher(node => $node, github => $tls);
($agent, $job) = ProvisionTest::new_job($node);
$row = DispatcherTest::wait_for_run($node, $job);
my ($tls_run) = $tls->runs;
is($row->{workflow_run_id}, $tls_run->{id}, 'dispatched over TLS, verified with --ca-file');
unlike($d->log_content, qr/plain http/, 'no warning about plain http');
is($d->stop, 0, 'SIGTERM: exit 0');

# Without it the certificate is not trusted: a transient failure, retried,
# never a failed job.
$d = DispatcherTest::start_dispatcher(node => $node, github => $tls, no_ca_file => 1,
	args => [ '--log-format', 'json' ]);
($agent, $job) = ProvisionTest::new_job($node);
ProvisionTest::wait_until(sub { grep { $_->{job_id} eq $job && $_->{outcome} eq 'retry' } $d->dispatch_lines });
($line) = grep { $_->{job_id} eq $job } $d->dispatch_lines;
is($line->{outcome}, 'retry', 'an untrusted certificate: retried');
like($line->{error}, qr/certificate/i, 'the log says it was the certificate');
ok(!exists $line->{status}, 'no HTTP status in the line');
is(ProvisionTest::job_row($node, $job)->{status}, 'dispatched', 'the job is not failed');
is(scalar(grep { $_->{json} && $_->{json}{inputs}{job_id} eq $job } $tls->requests), 0,
	'nothing reached the server');
is($d->stop, 0, 'SIGTERM: exit 0');

done_testing();
