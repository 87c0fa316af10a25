
# scripts/provision-callback against the real listener: Standard Webhooks by
# default and the GitHub scheme on request, raw and whsec_ secrets from a
# file or the environment, the response on stdout and exit 0 on success;
# run_id and run_attempt added from GITHUB_RUN_ID and GITHUB_RUN_ATTEMPT
# (seen through a relay that records the bodies); a 503 while the database
# is down is retried with the same delivery id until it lands, exactly once;
# 401 and 413 are final (one request each, exit 1), 409 too with its own
# exit status 4; a listener that is not there is retried a bounded number of
# times (exit 3); usage errors exit 2.

use strict;
use warnings;

use IPC::Run ();
use PostgreSQL::Test::Utils;
use Test::More;
use ProvisionTest;
use FakeCloud;

my $sender = ProvisionTest::repo_root() . '/scripts/provision-callback';

my $node = ProvisionTest::new_node('sender');
my $role = ProvisionTest::create_listener_role($node);
my $raw_secret   = ProvisionTest::random_secret();
my $whsec_secret = ProvisionTest::random_secret(whsec => 1);
my $l = ProvisionTest::start_listener(
	node    => $node,
	user    => $role,
	secrets => [ $raw_secret, $whsec_secret ]);
my $url = $l->url('/webhooks/github');

my $raw_file   = ProvisionTest::write_secret_file($raw_secret);
my $whsec_file = ProvisionTest::write_secret_file($whsec_secret);

# start_sender(\@args, env => {...}, stdin => $bytes): the sender running in
# the background; finish_sender($h) waits and returns exit, stdout, stderr.
sub start_sender
{
	my ($args, %opts) = @_;
	my %env = (
		PATH => $ENV{PATH},
		TMPDIR => $ENV{TMPDIR} // '/tmp',
		PROVISION_CALLBACK_URL => $url,
		%{ $opts{env} // {} });
	my $h = {
		out => '',
		err => '',
	};
	$h->{run} = IPC::Run::start(
		[ 'env', '-i', map({ "$_=$env{$_}" } sort keys %env), 'sh', $sender, @$args ],
		'<', \($opts{stdin} // ''), '>', \$h->{out}, '2>', \$h->{err},
		IPC::Run::timeout($opts{timeout} // 120));
	return $h;
}

sub finish_sender
{
	my ($h) = @_;
	eval { $h->{run}->finish; 1 } or do {
		$h->{run}->kill_kill;
		return { exit => undef, stdout => $h->{out}, stderr => "timed out: $@\n$h->{err}" };
	};
	return { exit => $h->{run}->result(0), stdout => $h->{out}, stderr => $h->{err} };
}

sub sender { return finish_sender(start_sender(@_)); }

sub requests_with_code
{
	my ($code) = @_;
	return ProvisionTest::metric_sum($l->metrics, 'provision_http_requests_total',
		{ endpoint => '/webhooks/github', code => $code }) // 0;
}

sub json_of { return ProvisionTest::decode_json($_[0]{stdout}) // {}; }

# --- GitHub scheme, raw secret from the environment --------------------------
my ($agent, $job) = ProvisionTest::new_job($node, status => 'dispatched');
my $r = sender([ '--scheme', 'github', '--data', qq({"job_id":"$job","status":"provisioning"}) ],
	env => { PROVISION_WEBHOOK_SECRET => $raw_secret });
is($r->{exit}, 0, 'github scheme, secret from PROVISION_WEBHOOK_SECRET: exit 0')
  or diag($r->{stderr});
is(json_of($r)->{job_status}, 'provisioning', 'stdout is the listener response');
ok(json_of($r)->{applied}, 'the callback was applied');
is(ProvisionTest::job_row($node, $job)->{status}, 'provisioning', 'job is provisioning');

# --- Standard Webhooks scheme, whsec_ secret from a file ---------------------
$r = sender(
	[ '--scheme', 'standard', '--secret-file', $whsec_file,
	  '--delivery-id', 'msg_sender_hb_1', '-' ],
	stdin => qq({"job_id":"$job","status":"heartbeat"}));
is($r->{exit}, 0, 'standard scheme, whsec_ secret from --secret-file: exit 0')
  or diag($r->{stderr});
is(json_of($r)->{action}, 'heartbeat', 'the heartbeat was recorded');
ok(defined ProvisionTest::job_row($node, $job)->{last_heartbeat_at},
	'last_heartbeat_at is set');
ok(ProvisionTest::delivery_row($node, 'msg_sender_hb_1'),
	'the given delivery id is the webhook-id');

# --- the default scheme and the run's identity, seen through a relay --------
my $relay = FakeCloud->start(relay_to => $l->base_url);
my $relay_url = $relay->url('/relay/webhooks/github');
sub relayed { return $relay->calls->[-1] // {}; }
my %run_env = (
	PROVISION_WEBHOOK_SECRET => $whsec_secret,
	GITHUB_RUN_ID            => '9876543210',
	GITHUB_RUN_ATTEMPT       => '3');

my (undef, $job_r) = ProvisionTest::new_job($node, status => 'dispatched');
my $plain = qq({"job_id":"$job_r","status":"provisioning"});
$r = sender([ '--url', $relay_url, '--data', $plain ],
	env => { PROVISION_WEBHOOK_SECRET => $whsec_secret });
is($r->{exit}, 0, 'no --scheme: exit 0') or diag($r->{stderr});
my $h = relayed()->{headers};
ok($h->{'webhook-id'} && $h->{'webhook-timestamp'} && $h->{'webhook-signature'},
	'no --scheme: signed with Standard Webhooks');
ok(!exists $h->{'x-hub-signature-256'}, 'and without the GitHub scheme');
is(relayed()->{raw}, $plain, 'outside a workflow run the body is sent as given');

$r = sender([ '--url', $relay_url, '--data', qq({"job_id":"$job_r","status":"heartbeat","n":12345678901234567890}) ],
	env => \%run_env);
is($r->{exit}, 0, 'with GITHUB_RUN_ID: exit 0') or diag($r->{stderr});
is(relayed()->{raw},
	qq({"run_id":"9876543210","run_attempt":"3","job_id":"$job_r","status":"heartbeat","n":12345678901234567890}),
	'run_id and run_attempt are added in front, the rest of the body as given');

$r = sender([ '--url', $relay_url, '--data', qq(\n  {"run_id":"9876543210", "job_id":"$job_r","status":"heartbeat"}\n) ],
	env => \%run_env);
is($r->{exit}, 0, 'a body with its own run_id: exit 0') or diag($r->{stderr});
is(relayed()->{raw},
	qq(\n  {"run_attempt":"3","run_id":"9876543210", "job_id":"$job_r","status":"heartbeat"}\n),
	'keeps its run_id and gets run_attempt');

$r = sender([ '--url', $relay_url, '--data', '{}' ], env => \%run_env);
is($r->{exit}, 1, 'an empty object with the run added: the listener refuses it, exit 1');
is(relayed()->{raw}, '{"run_id":"9876543210","run_attempt":"3"}',
	'an empty object becomes the run alone');

my $n = scalar @{ $relay->calls };
for my $bad ([ '[1]', qr/the body is not a JSON object/ ],
	[ '{"a":1} {"b":2}', qr/the body is more than one JSON value/ ],
	[ '{"a":', qr/the body is not JSON/ ])
{
	$r = sender([ '--url', $relay_url, '--data', $bad->[0] ], env => \%run_env);
	is($r->{exit}, 2, "body '$bad->[0]' with GITHUB_RUN_ID: exit 2");
	like($r->{stderr}, $bad->[1], 'and says why');
}
for my $bad ([ GITHUB_RUN_ID => '12x' ], [ GITHUB_RUN_ID => '0' ],
	[ GITHUB_RUN_ID => '9223372036854775808' ], [ GITHUB_RUN_ATTEMPT => '-1' ])
{
	$r = sender([ '--url', $relay_url, '--data', '{}' ], env => { %run_env, @$bad });
	is($r->{exit}, 2, "$bad->[0]=$bad->[1]: exit 2");
	like($r->{stderr}, qr/$bad->[0] must be a positive/, 'and names the variable');
}
$r = sender([ '--url', $relay_url, '--data', qq({"job_id":"$job_r","status":"heartbeat"}) ],
	env => { %run_env, GITHUB_RUN_ID => '9223372036854775807' });
like(relayed()->{raw}, qr/^\{"run_id":"9223372036854775807",/, 'the largest 64-bit run id is taken');
is(scalar @{ $relay->calls }, $n + 1, 'a bad body or run id sends nothing');
$relay->stop;

# --- GitHub scheme keyed with a decoded whsec_ secret, body from a file, with
# --- bytes outside ASCII and a trailing newline -----------------------------
my $dir = PostgreSQL::Test::Utils::tempdir();
my $body_file = "$dir/running.json";
{
	open(my $fh, '>:raw', $body_file) or die "$body_file: $!";
	print $fh qq({"job_id":"$job","status":"running","server_id":4711,)
	  . qq("server_ip":"203.0.113.7","tailscale_ip":"100.64.0.7",)
	  . qq("note":"\xc3\xa9t\xc3\xa9 \xe2\x9c\x93"}\n);
	close $fh;
}
$r = sender([ '--scheme', 'github', '--delivery-id', 'gh-sender-run-1', $body_file ],
	env => { PROVISION_WEBHOOK_SECRET_FILE => $whsec_file });
is($r->{exit}, 0, 'github scheme with a whsec_ secret, UTF-8 body file: exit 0')
  or diag($r->{stderr});
is(json_of($r)->{action}, 'completed', 'the running callback completed the job');
is(ProvisionTest::agent_row($node, $agent)->{status}, 'active', 'agent is active');
my $inst = ProvisionTest::instance_row($node, $agent);
is($inst->{server_id}, '4711', 'numeric server_id stored as text');
is($inst->{server_ip}, '203.0.113.7', 'server_ip stored');

# The same delivery again: a duplicate, still exit 0.
$r = sender([ '--scheme', 'github', '--delivery-id', 'gh-sender-run-1', $body_file ],
	env => { PROVISION_WEBHOOK_SECRET_FILE => $whsec_file });
is($r->{exit}, 0, 'a repeated delivery id: exit 0');
ok(json_of($r)->{duplicate}, 'and the listener reports a duplicate');

# --- final statuses: one request each, exit 1, response on stderr ----------
my $before = requests_with_code(401);
$r = sender([ '--data', qq({"job_id":"$job","status":"heartbeat"}) ],
	env => { PROVISION_WEBHOOK_SECRET => 'not-the-secret' });
is($r->{exit}, 1, 'wrong secret: exit 1');
like($r->{stderr}, qr/HTTP 401/, 'stderr names the status');
like($r->{stderr}, qr/"error"/, 'stderr holds the response body');
is($r->{stdout}, '', 'nothing on stdout');
is(requests_with_code(401) - $before, 1, '401 is not retried: one request');

$before = requests_with_code(409);
my $response_file = PostgreSQL::Test::Utils::tempdir() . '/response.json';
$r = sender([ '--response', $response_file,
		'--data', qq({"job_id":"$job","status":"failed","error":"late"}) ],
	env => { PROVISION_WEBHOOK_SECRET => $raw_secret });
is($r->{exit}, 4, 'refused transition (running -> failed): exit 4, the conflict status');
like($r->{stderr}, qr/HTTP 409 .*: the job refused this callback/, 'stderr names 409 and what it means');
is(ProvisionTest::decode_json(slurp_file($response_file))->{status}, 'running',
	'--response holds the 409 body');
like($r->{stderr}, qr/"status"\s*:\s*"running"/, 'stderr holds the 409 body with the current status');
is(requests_with_code(409) - $before, 1, '409 is not retried: one request');
is(ProvisionTest::job_row($node, $job)->{status}, 'running', 'job still running');

$before = requests_with_code(413);
$r = sender([ '--data', '{"pad":"' . ('x' x 70000) . '"}' ],
	env => { PROVISION_WEBHOOK_SECRET => $raw_secret });
is($r->{exit}, 1, 'body over --max-body: exit 1');
like($r->{stderr}, qr/HTTP 413/, 'stderr names 413');
is(requests_with_code(413) - $before, 1, '413 is not retried: one request');

# --- 503 while the database is down: retried until it lands, once -----------
my ($agent2, $job2) = ProvisionTest::new_job($node, status => 'dispatched');
$node->stop('fast');
my $probe = $l->callback({ job_id => $job2, status => 'heartbeat' });
is($probe->{status}, 503, 'with the database stopped the listener answers 503');
my $retry_after = $probe->{headers}{'retry-after'} // '';
like($retry_after, qr/^[2-9]$/, 'with a Retry-After above the sender\'s --max-delay 1');
$before = requests_with_code(503);
my $bg = start_sender(
	[ '--delivery-id', 'gh-sender-outage-1', '--max-delay', '1', '--attempts', '60',
	  '--data', qq({"job_id":"$job2","status":"provisioning"}) ],
	env => { PROVISION_WEBHOOK_SECRET => $raw_secret });
ok(ProvisionTest::wait_until(sub { requests_with_code(503) - $before >= 2 }),
	'the sender retries while the listener answers 503');
$node->start;
$r = finish_sender($bg);
is($r->{exit}, 0, 'after the database is back the callback lands: exit 0')
  or diag($r->{stderr});
like($r->{stderr}, qr/HTTP 503, attempt 1 of 60; retrying in ${retry_after}s/,
	'the sender waited as Retry-After said, not its own shorter backoff');
ok(json_of($r)->{applied}, 'the landed callback was applied');
ok(!json_of($r)->{duplicate}, 'and was not a duplicate: no earlier attempt committed');
my $j2 = ProvisionTest::job_row($node, $job2);
is($j2->{status},   'provisioning', 'job is provisioning');
is($j2->{attempts}, 1,              'one provisioning attempt counted');
my $events = ProvisionTest::events_for_job($node, $job2);
is(scalar(grep { ($_->{to_status} // '') eq 'provisioning' } @$events), 1,
	'exactly one event for the move to provisioning');
is(ProvisionTest::query_scalar($node,
	"SELECT count(*) FROM provision.callback_deliveries WHERE job_id = '$job2'"),
	1, 'exactly one delivery recorded for the job');

# --- nobody listening: bounded attempts, exit 3 ------------------------------
my $port = PostgreSQL::Test::Cluster::get_free_port();
$r = sender(
	[ '--url', "http://127.0.0.1:$port/webhooks/github", '--attempts', '3',
	  '--max-delay', '0', '--data', '{}' ],
	env => { PROVISION_WEBHOOK_SECRET => $raw_secret });
is($r->{exit}, 3, 'connection refused three times: exit 3');
is(scalar(() = $r->{stderr} =~ /connection failed/g), 3, 'three attempts were made');
like($r->{stderr}, qr/giving up after 3 attempt/, 'stderr says it gave up');

# --- usage and configuration errors: exit 2 ---------------------------------
$r = sender([ '--data', '{}' ]);
is($r->{exit}, 2, 'no secret: exit 2');
like($r->{stderr}, qr/no secret/, 'and says so');
$r = sender([ '--scheme', 'svix', '--data', '{}' ],
	env => { PROVISION_WEBHOOK_SECRET => $raw_secret });
is($r->{exit}, 2, 'unknown scheme: exit 2');
like($r->{stderr}, qr/--scheme must be github or standard/, 'and names the option');
$r = sender([ '--data', '{}' ], env => { PROVISION_WEBHOOK_SECRET => 'whsec_***' });
is($r->{exit}, 2, 'a whsec_ secret that is not base64: exit 2');
$r = sender([ '--data', '' ], env => { PROVISION_WEBHOOK_SECRET => $raw_secret });
is($r->{exit}, 2, 'empty body: exit 2');
$r = sender([ '--help' ]);
is($r->{exit}, 0, '--help: exit 0');
like($r->{stdout}, qr/^usage: provision-callback/, '--help prints the usage');

$l->stop;
done_testing();
