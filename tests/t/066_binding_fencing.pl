
# The extension's delivery binding and run fencing (1.1) through the
# listener: a delivery id reused for another payload or another job is a 422
# naming the id and what differs, and changes nothing; a callback from a
# workflow run that does not own its job is a 409 whose body names the
# owner's workflow_run_id as a JSON number, every digit kept, while the
# owner's own callbacks and callbacks without run_id are applied.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use ProvisionTest;

my $node = ProvisionTest::new_node('binding');
my $role = ProvisionTest::create_listener_role($node);
my $l = ProvisionTest::start_listener(node => $node, user => $role, args => [ '--pool', '2' ]);

sub event_kinds
{
	my ($job) = @_;
	return join(',', map { $_->{kind} } @{ ProvisionTest::events_for_job($node, $job) });
}

# --- the delivery binding: 422 ---
my (undef, $job_a) = ProvisionTest::new_job($node, status => 'dispatched');
my (undef, $job_b) = ProvisionTest::new_job($node, status => 'dispatched');
my $first = { job_id => $job_a, status => 'provisioning' };

for my $scheme ('github', 'standard')
{
	my $id = "bind-$scheme";
	my $r = $l->callback($first, delivery => $id, scheme => $scheme);
	is($r->{status}, 200, "$scheme: first delivery applied") or diag explain $r;
	$r = $l->callback($first, delivery => $id, scheme => $scheme);
	ok($r->{status} == 200 && $r->{json}{duplicate}, "$scheme: the same callback again is a duplicate");

	$r = $l->callback({ job_id => $job_a, status => 'heartbeat' }, delivery => $id, scheme => $scheme);
	is($r->{status}, 422, "$scheme: the id with another payload: 422") or diag explain $r;
	is_deeply($r->{json},
		{
			error       => qq{delivery id "$id" was already used for another callback},
			delivery_id => $id,
			detail      => 'It was recorded for the same job with another payload.'
		},
		"$scheme: the 422 names the delivery id and what differs");

	$r = $l->callback({ job_id => $job_b, status => 'provisioning' }, delivery => $id, scheme => $scheme);
	is($r->{status}, 422, "$scheme: the id for another job: 422");
	is($r->{json}{detail}, 'It was recorded for another job.', "$scheme: the detail says so");
	is($r->{json}{delivery_id}, $id, "$scheme: and names the delivery id");
}
is(event_kinds($job_a), 'enqueued,dispatched,status', 'the refused deliveries changed job A once only');
is(event_kinds($job_b), 'enqueued,dispatched', 'job B did not move');
is(ProvisionTest::job_row($node, $job_a)->{last_heartbeat_at}, undef, 'the refused heartbeat was not recorded');

# --- run fencing: 409 with the owner run ---
my (undef, $job_c) = ProvisionTest::new_job($node, status => 'dispatched');
$node->safe_psql('provision',
	"SELECT provision.record_dispatch('$job_c', 4242, 'https://github.example/runs/4242')");

my $r = $l->callback({ job_id => $job_c, status => 'provisioning', run_id => 4243 }, delivery => 'fence-1');
is($r->{status}, 409, 'another run: 409') or diag explain $r;
is_deeply($r->{json},
	{
		error           => "job $job_c belongs to workflow run 4242, not 4243",
		job_id          => $job_c,
		status          => 'dispatched',
		workflow_run_id => 4242
	},
	'the 409 names the owner run');
like($r->{content}, qr/"workflow_run_id":4242[,}]/, 'as a JSON number');
ok(!ProvisionTest::delivery_row($node, 'fence-1'), 'the refused delivery is not recorded');

$r = $l->callback({ job_id => $job_c, status => 'provisioning', run_id => '4242' }, delivery => 'fence-2');
ok($r->{status} == 200 && $r->{json}{applied}, 'the owner run (run_id as a string of digits): applied');
$r = $l->callback({ job_id => $job_c, status => 'heartbeat' });
is($r->{status}, 200, 'a callback without run_id: applied');
$r = $l->callback({ job_id => $job_c, status => 'failed', error => 'x', run_id => 7 });
is($r->{status}, 409, 'another run, later: 409');
is($r->{json}{workflow_run_id}, 4242, 'the owner run again');
is($r->{json}{status}, 'provisioning', 'with the current status');
is(ProvisionTest::job_row($node, $job_c)->{status}, 'provisioning', 'the other run changed nothing');

# A run id past 2^53 keeps every digit in the body.
my (undef, $job_d) = ProvisionTest::new_job($node, status => 'dispatched');
$node->safe_psql('provision', "SELECT provision.record_dispatch('$job_d', 9007199254740993)");
$r = $l->callback({ job_id => $job_d, status => 'provisioning', run_id => 5 });
is($r->{status}, 409, 'large owner run id: 409');
like($r->{content}, qr/"workflow_run_id":9007199254740993[,}]/, 'large owner run id: exact');

is($l->stop, 0, 'listener exits 0');

done_testing();
