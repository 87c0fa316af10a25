
# Signed callbacks change the database exactly as SPEC section 2 says, through
# both routes and both signature schemes: provisioning, heartbeat, running
# with VM metadata (instance row, job running, agent active, one completed
# event), the no-op and stale cases, failed with an error text.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use ProvisionTest;

my $node = ProvisionTest::new_node('callback');
my $l = ProvisionTest::start_listener(node => $node);

my $r = $l->get('/healthz');
is($r->{status}, 200, 'GET /healthz answers 200');

my ($agent, $job) = ProvisionTest::new_job($node, status => 'dispatched');

# provisioning, GitHub scheme
$r = $l->callback({ job_id => $job, status => 'provisioning' },
	delivery => 'gh-prov-1');
is($r->{status}, 200, 'provisioning callback answers 200');
like($r->{headers}{'content-type'}, qr{^application/json}, 'response is JSON');
is($r->{json}{job_id},       $job,           'result names the job');
is($r->{json}{action},       'status',       'action is status');
ok($r->{json}{applied},      'provisioning is applied');
ok(!$r->{json}{duplicate},   'first delivery is not a duplicate');
is($r->{json}{job_status},   'provisioning', 'result job_status');
is($r->{json}{agent_status}, 'provisioning', 'result agent_status');

my $j = ProvisionTest::job_row($node, $job);
is($j->{status},   'provisioning', 'job row is provisioning');
is($j->{attempts}, 1,              'entering provisioning counts an attempt');
ok(defined $j->{started_at}, 'started_at is set');
is(ProvisionTest::agent_row($node, $agent)->{status},
	'provisioning', 'agent row is provisioning');

# heartbeat, Standard Webhooks scheme
$r = $l->callback({ job_id => $job, status => 'heartbeat' }, scheme => 'standard');
is($r->{status},         200,         'heartbeat answers 200');
is($r->{json}{action},   'heartbeat', 'action is heartbeat');
$j = ProvisionTest::job_row($node, $job);
ok(defined $j->{last_heartbeat_at}, 'heartbeat sets last_heartbeat_at');
is($j->{status}, 'provisioning', 'heartbeat does not change the status');

# running with metadata, the original route, a charset parameter, a numeric
# Hetzner server id and an unknown extra key
my $events_before = scalar @{ ProvisionTest::events_for_job($node, $job) };
$r = $l->callback(
	{
		job_id       => $job,
		status       => 'running',
		server_id    => 48151623,
		server_ip    => '203.0.113.10',
		tailscale_ip => '100.64.0.10',
		workflow_run => 'ignored extra key',
	},
	path         => '/api/webhooks/github',
	content_type => 'application/json; charset=utf-8',
	delivery     => 'gh-run-1');
is($r->{status}, 200, 'running callback on /api/webhooks/github with charset answers 200')
  or diag explain $r;
is($r->{json}{action},       'completed', 'action is completed');
ok($r->{json}{applied},      'running is applied');
is($r->{json}{job_status},   'running',   'result job_status running');
is($r->{json}{agent_status}, 'active',    'result agent_status active');
ok(defined $r->{json}{instance_id}, 'result carries instance_id');

my $inst = ProvisionTest::instance_row($node, $agent);
ok($inst, 'an instance row exists for the agent');
is($inst->{id},           $r->{json}{instance_id}, 'instance_id is that row');
is($inst->{job_id},       $job,                    'instance points at the job');
is($inst->{server_id},    '48151623',              'numeric server_id stored as text');
is($inst->{server_ip},    '203.0.113.10',          'server_ip stored');
is($inst->{tailscale_ip}, '100.64.0.10',           'tailscale_ip stored');

$j = ProvisionTest::job_row($node, $job);
is($j->{status}, 'running', 'job row is running');
ok(defined $j->{completed_at}, 'completed_at is set');
is(ProvisionTest::agent_row($node, $agent)->{status}, 'active', 'agent row is active');

my $events = ProvisionTest::events_for_job($node, $job);
is(scalar @$events, $events_before + 1, 'running wrote exactly one event');
is($events->[-1]{kind},      'completed', 'the event is completed');
is($events->[-1]{to_status}, 'running',   'the event goes to running');

# status-only running on a running job: same, no-op
$r = $l->callback({ job_id => $job, status => 'running', server_id => undef });
is($r->{status}, 200, 'status-only running on a running job answers 200');
ok(!$r->{json}{applied}, 'and reports applied false');
is($r->{json}{job_status}, 'running', 'job stays running');

# provisioning on a running job: stale, no-op
$r = $l->callback({ job_id => $job, status => 'provisioning' }, scheme => 'standard');
is($r->{status}, 200, 'stale provisioning on a running job answers 200');
ok(!$r->{json}{applied}, 'and reports applied false');
is(scalar @{ ProvisionTest::events_for_job($node, $job) },
	$events_before + 1, 'no-op callbacks wrote no event');
is(ProvisionTest::job_row($node, $job)->{updated_at},
	$j->{updated_at}, 'no-op callbacks did not touch the job row');

# failed with an error text, on a second agent
my ($agent2, $job2) = ProvisionTest::new_job($node, status => 'provisioning');
$r = $l->callback(
	{ job_id => $job2, status => 'failed', error => 'hcloud: quota exceeded' },
	scheme => 'both');
is($r->{status}, 200, 'failed callback (both schemes present) answers 200');
is($r->{json}{action},       'failed', 'action is failed');
is($r->{json}{job_status},   'failed', 'result job_status failed');
is($r->{json}{agent_status}, 'failed', 'result agent_status failed');
$j = ProvisionTest::job_row($node, $job2);
is($j->{error}, 'hcloud: quota exceeded', 'error text stored');
ok(defined $j->{failed_at}, 'failed_at set');
is(ProvisionTest::agent_row($node, $agent2)->{status}, 'failed', 'agent row failed');

is($l->stop, 0, 'listener exits 0 on SIGTERM');

done_testing();
