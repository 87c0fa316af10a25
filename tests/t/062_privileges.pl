
# The listener runs as a least-privileged role (USAGE on schema provision and
# EXECUTE on provision.handle_callback(jsonb, text), nothing else) and still
# does its whole job, while that role can do nothing else.  When the database
# raises an SQLSTATE the listener has no mapping for (42501 after EXECUTE is
# revoked), the answer is 500 with no internal detail; granting it back
# restores service without a listener restart.  A role that cannot log in
# leaves the listener running but not ready (503).

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use ProvisionTest;

my $node = ProvisionTest::new_node('privileges');
my $role = ProvisionTest::create_listener_role($node, 'webhook');
my $l = ProvisionTest::start_listener(node => $node, user => $role, args => [ '--pool', '2' ]);

is($l->get('/readyz')->{status}, 200, '/readyz 200 as the least-privileged role');

my ($agent, $job) = ProvisionTest::new_job($node, status => 'dispatched');
my $r = $l->callback({ job_id => $job, status => 'provisioning' }, delivery => 'priv-1');
is($r->{status}, 200, 'provisioning applied as the least-privileged role') or diag explain $r;
$r = $l->callback(
	{
		job_id => $job, status => 'running', server_id => 'srv-9',
		server_ip => '198.51.100.9', tailscale_ip => '100.64.9.9'
	},
	scheme => 'standard');
is($r->{status}, 200, 'running with metadata applied as the least-privileged role');
is(ProvisionTest::job_row($node, $job)->{status}, 'running', 'job running');
is(ProvisionTest::agent_row($node, $agent)->{status}, 'active', 'agent active');
is(ProvisionTest::instance_row($node, $agent)->{server_id}, 'srv-9', 'instance stored');
$r = $l->callback({ job_id => $job, status => 'provisioning' }, delivery => 'priv-1');
ok($r->{status} == 200 && $r->{json}{duplicate}, 'dedup works as the least-privileged role');
is($l->callback({ job_id => $job, status => 'failed' })->{status}, 409,
	'409 as the least-privileged role');

# The role can do nothing else.
for my $sql (
	'SELECT count(*) FROM provision.agents',
	'SELECT count(*) FROM provision.provisioning_jobs',
	'INSERT INTO provision.agents (name) VALUES (\'x\')',
	"SELECT provision.update_job_status('$job', 'failed')",
	"SELECT provision.enqueue_job('$agent')",
	'SELECT * FROM provision.claim_jobs(1)',
	'SELECT provision.expire_stale_jobs()',
	'SELECT provision.prune_history()')
{
	my ($ret, $out, $err) = $node->psql('provision', $sql,
		connstr => ProvisionTest::conninfo($node, user => $role));
	isnt($ret, 0, "role cannot run: $sql");
	like($err, qr/permission denied/, "  ... permission denied");
}

# An SQLSTATE without a mapping: 500, nothing internal in the body.
$node->safe_psql('provision',
	"REVOKE EXECUTE ON FUNCTION provision.handle_callback(jsonb, text) FROM $role");
my (undef, $job2) = ProvisionTest::new_job($node, status => 'dispatched');
my $from = $l->log_size;
$r = $l->callback({ job_id => $job2, status => 'provisioning' }, delivery => 'priv-500');
is($r->{status}, 500, 'EXECUTE revoked (42501): 500') or diag explain $r;
ok(ref $r->{json} eq 'HASH' && length($r->{json}{error} // ''), '500 has a JSON error');
unlike($r->{content}, qr/permission|handle_callback|42501|provision\.|SQL/i,
	'500 body carries no internal detail');
is(ProvisionTest::job_row($node, $job2)->{status}, 'dispatched', 'nothing changed');
like($l->log_content($from), qr/42501|permission denied/i, 'the log has the detail for the operator');

$node->safe_psql('provision',
	"GRANT EXECUTE ON FUNCTION provision.handle_callback(jsonb, text) TO $role");
$r = $l->callback({ job_id => $job2, status => 'provisioning' }, delivery => 'priv-500');
is($r->{status}, 200, 'after GRANT the same delivery is applied, same listener');
ok(!$r->{json}{duplicate}, 'the 500 attempt was not recorded');

is($l->stop, 0, 'listener exits 0');

# A role that cannot log in at all: the listener runs, but is not ready.
my $l2 = ProvisionTest::start_listener(node => $node, user => 'no_such_role');
is($l2->get('/healthz')->{status}, 200, 'unknown role: /healthz 200');
is($l2->get('/readyz')->{status}, 503, 'unknown role: /readyz 503');
$r = $l2->callback({ job_id => $job2, status => 'heartbeat' });
is($r->{status}, 503, 'unknown role: callback 503');
unlike($r->{content}, qr/no_such_role|FATAL|authentication/i, 'unknown role: no server message in the body');
is($l2->stop, 0, 'listener exits 0');

done_testing();
