
# GitHub App authentication: the JWT (RS256, verified by the fake with the
# App's public key; iat a minute back, exp ten minutes after iat, iss the
# App id) is exchanged for an installation token, which is cached, renewed
# five minutes before its expires_at, and renewed at once (once) when a
# dispatch gets 401. While no installation token can be had, no job is
# claimed and /readyz says why.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;
use DispatcherTest;

my $node = ProvisionTest::new_node('main');
my ($key_file, $public_key) = DispatcherTest::app_key();
my $app = { id => 4242, installation => 77, key_file => $key_file };
my $gh = FakeGitHub->new(
	app => { id => 4242, installation => 77, public_key => $public_key });

sub lines_for
{
	my ($d, $job) = @_;
	return grep { $_->{job_id} eq $job } $d->dispatch_lines;
}

my $d = DispatcherTest::start_dispatcher(node => $node, github => $gh, app => $app,
	metrics => 1, args => [ '--log-format', 'json' ]);
my ($agent, $job) = ProvisionTest::new_job($node);
my $row = DispatcherTest::wait_for_run($node, $job);
ok(defined $row->{workflow_run_id}, 'dispatched with App authentication');

my @tokens = $gh->requests(endpoint => 'token');
is(scalar @tokens, 1, 'one installation token requested');
my $t = $tokens[0];
is($t->{method}, 'POST', 'POST');
is($t->{path}, '/app/installations/77/access_tokens', 'for the installation');
is($t->{headers}{accept}, 'application/vnd.github+json', 'Accept');
is($t->{headers}{'x-github-api-version'}, '2022-11-28', 'X-GitHub-Api-Version');
is($t->{headers}{'user-agent'}, "provision-dispatcher/$ProvisionTest::EXTVERSION", 'User-Agent');
is($t->{status}, 201, 'GitHub issued the token');
ok($t->{jwt}{valid}, 'the JWT passed every check: ' . ($t->{jwt}{error} // 'RS256 signature, iat, exp, iss'));
is_deeply($t->{jwt}{header}, { alg => 'RS256', typ => 'JWT' }, 'JWT header');
my $claims = $t->{jwt}{claims};
is($claims->{iss}, 4242, 'iss: the App id');
like(ProvisionTest::encode_json($claims), qr/"iss":4242[,}]/, 'iss is a JSON number');
is($claims->{exp} - $claims->{iat}, 600, 'exp ten minutes after iat');
my $back = $t->{time} - $claims->{iat};
ok($back >= 59 && $back <= 62, sprintf('iat a minute before the request (%.1f s)', $back));

my ($dispatch) = $gh->requests(endpoint => 'dispatch');
my ($issued) = $dispatch->{headers}{authorization} =~ /^Bearer (ghs_\S+)$/;
ok($issued, 'the dispatch carried the installation token');

# cached: the next job needs no new token
($agent, $job) = ProvisionTest::new_job($node);
DispatcherTest::wait_for_run($node, $job);
is(scalar $gh->requests(endpoint => 'token'), 1, 'the token is cached for the next dispatch');

# a 401 renews the token at once and sends again
$gh->script({ endpoint => 'dispatch', status => 401, body => { message => 'Bad credentials' } });
($agent, $job) = ProvisionTest::new_job($node);
$row = DispatcherTest::wait_for_run($node, $job);
my @l = lines_for($d, $job);
is_deeply([ map { $_->{outcome} } @l ], [ 'renewed', 'run' ], '401: renewed, then dispatched');
is_deeply([ map { $_->{status} } @l ], [ 401, 200 ], 'statuses 401, 200');
@tokens = $gh->requests(endpoint => 'token');
is(scalar @tokens, 2, 'a second token was requested');
my @d = grep { $_->{json}{inputs}{job_id} eq $job } $gh->requests(endpoint => 'dispatch');
is(scalar @d, 2, 'the job was sent twice');
ok($d[1]{time} - $d[0]{time} < 1, 'the second time at once');
isnt($d[1]{headers}{authorization}, $d[0]{headers}{authorization}, 'with the new token');

# a second 401 after the renewal fails the job
$gh->script({ endpoint => 'dispatch', status => 401, body => { message => 'Bad credentials' },
		times => 2 });
($agent, $job) = ProvisionTest::new_job($node);
$row = DispatcherTest::wait_for_status($node, $job, 'failed');
is($row->{error}, 'dispatch: HTTP 401: Bad credentials', 'a 401 after the renewal fails the job');
is_deeply([ map { $_->{outcome} } lines_for($d, $job) ], [ 'renewed', 'failed' ],
	'renewed once only');
is(ProvisionTest::metric_sum($d->metrics, 'provision_dispatcher_token_renewals_total', {}), 3,
	'metrics: three tokens obtained');
is($d->stop, 0, 'SIGTERM: exit 0');

# renewal five minutes ahead of expires_at: a token valid for 302 s is
# renewed after 2 s
my $short = FakeGitHub->new(
	app => { id => 4242, installation => 77, public_key => $public_key, token_lifetime => 302 });
$d = DispatcherTest::start_dispatcher(node => $node, github => $short, app => $app,
	args => [ '--log-format', 'json' ]);
($agent, $job) = ProvisionTest::new_job($node);
DispatcherTest::wait_for_run($node, $job);
($agent, $job) = ProvisionTest::new_job($node);
DispatcherTest::wait_for_run($node, $job);
is(scalar $short->requests(endpoint => 'token'), 1, 'still fresh: reused');
sleep(2.5);
($agent, $job) = ProvisionTest::new_job($node);
DispatcherTest::wait_for_run($node, $job);
@tokens = $short->requests(endpoint => 'token');
ok(@tokens >= 2, 'less than five minutes left: renewed (' . scalar(@tokens) . ' tokens)');
my @ds = $short->requests(endpoint => 'dispatch');
isnt($ds[2]{headers}{authorization}, $ds[0]{headers}{authorization}, 'the call used a new token');
ok($ds[2]{seq} > $tokens[1]{seq}, 'renewed before the call, not after a 401');
is(scalar(grep { $_->{status} == 401 } @ds), 0, 'no call was refused');
is($d->stop, 0, 'SIGTERM: exit 0');

# no installation token: nothing is claimed, /readyz says why
$d = DispatcherTest::start_dispatcher(node => $node, github => $gh, metrics => 1,
	app => { %$app, installation => 78 }, args => [ '--log-format', 'json' ]);
($agent, $job) = ProvisionTest::new_job($node);
ok($d->wait_for_log(qr/cannot obtain a GitHub App installation token: HTTP 404: Not Found/),
	'wrong installation: logged');
my $ready;
ProvisionTest::wait_until(sub { ($ready = $d->get('/readyz'))->{status} == 503 });
is($ready->{status}, 503, '/readyz 503');
like($ready->{json}{error}, qr/no GitHub App installation token: HTTP 404: Not Found/,
	'/readyz names the reason');
sleep(2);
is(ProvisionTest::job_row($node, $job)->{status}, 'pending', 'the job is not claimed');
my $n = scalar grep { $_->{path} =~ m{/78/} } $gh->requests(endpoint => 'token');
ok($n >= 1 && $n <= 4, "token requests back off ($n in 2 s)");
is($d->stop, 0, 'SIGTERM: exit 0');

# a key GitHub does not know: the JWT fails the signature check
my ($other_key) = DispatcherTest::app_key();
$d = DispatcherTest::start_dispatcher(node => $node, github => $gh, metrics => 1,
	app => { %$app, key_file => $other_key });
ok($d->wait_for_log(qr/cannot obtain a GitHub App installation token: HTTP 401: signature does not verify/),
	'another key: the fake refuses the signature');
is(ProvisionTest::job_row($node, $job)->{status}, 'pending', 'the job is still not claimed');
is($d->stop, 0, 'SIGTERM: exit 0');

# with the right installation the waiting job goes out
$d = DispatcherTest::start_dispatcher(node => $node, github => $gh, app => $app);
ok(defined DispatcherTest::wait_for_run($node, $job)->{workflow_run_id},
	'the right installation: the waiting job is dispatched');
is($d->stop, 0, 'SIGTERM: exit 0');

done_testing();
