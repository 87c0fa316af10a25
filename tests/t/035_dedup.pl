
# Delivery deduplication over HTTP: the same X-GitHub-Delivery or webhook-id
# twice with the same body has one effect and the second answer is the
# stored result with "duplicate": true; the same id with another body is no
# duplicate and changes nothing; the same delivery sent by several clients
# at the same moment is applied exactly once; a failed attempt records
# nothing, so the sender's retry is applied; without a delivery id nothing
# is deduplicated.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use ProvisionTest;

my $node = ProvisionTest::new_node('dedup');
my $l = ProvisionTest::start_listener(node => $node);

sub metadata
{
	my ($job, $n) = @_;
	return {
		job_id       => $job,
		status       => 'running',
		server_id    => "srv-$n",
		server_ip    => "192.0.2.$n",
		tailscale_ip => "100.64.1.$n"
	};
}

sub completed_events
{
	my ($job) = @_;
	return scalar grep { $_->{kind} eq 'completed' }
	  @{ ProvisionTest::events_for_job($node, $job) };
}

for my $scheme ('github', 'standard')
{
	my ($agent, $job) = ProvisionTest::new_job($node, status => 'provisioning');
	my $delivery = "dedup-$scheme-1";
	my $first = $l->callback(metadata($job, 1), scheme => $scheme, delivery => $delivery);
	is($first->{status}, 200, "$scheme: first delivery 200") or diag explain $first;
	ok($first->{json}{applied}, "$scheme: first delivery applied");
	ok(!$first->{json}{duplicate}, "$scheme: first delivery not a duplicate");

	# The retry is signed afresh (Standard Webhooks: a new timestamp).
	my $second = $l->callback(metadata($job, 1), scheme => $scheme, delivery => $delivery,
		$scheme eq 'standard' ? (timestamp => time() + 1) : ());
	is($second->{status}, 200, "$scheme: repeated delivery 200") or diag explain $second;
	ok($second->{json}{duplicate}, "$scheme: repeated delivery has duplicate true");
	is($second->{json}{job_id},      $job, "$scheme: duplicate result names the job");
	is($second->{json}{action},      $first->{json}{action},      "$scheme: stored action");
	is($second->{json}{instance_id}, $first->{json}{instance_id}, "$scheme: stored instance_id");

	# The same id with other metadata is not a redelivery: refused, and
	# neither applied nor answered with the stored result.
	my $reused = $l->callback(metadata($job, 2), scheme => $scheme, delivery => $delivery,
		$scheme eq 'standard' ? (timestamp => time() + 2) : ());
	isnt($reused->{status}, 200, "$scheme: the id with another body is refused")
	  or diag explain $reused;
	ok(!($reused->{json} && $reused->{json}{duplicate}),
		"$scheme: the id with another body is not answered as a duplicate");

	is(completed_events($job), 1, "$scheme: one completed event");
	my $inst = ProvisionTest::instance_row($node, $agent);
	is($inst->{server_id}, 'srv-1', "$scheme: the other body's metadata was not applied");
	my $d = ProvisionTest::delivery_row($node, $delivery);
	ok($d, "$scheme: delivery recorded");
	is($d->{job_id}, $job, "$scheme: delivery row names the job");
}

# --- the same delivery from several clients at once ---
{
	my ($agent, $job) = ProvisionTest::new_job($node, status => 'provisioning');
	my $results = ProvisionTest::fork_clients(6, sub {
		my $r = $l->callback(metadata($job, 7), delivery => 'dedup-race-1');
		return { status => $r->{status}, duplicate => $r->{json}{duplicate} ? 1 : 0 };
	});
	is(scalar(grep { $_ && $_->{status} == 200 } @$results), 6, 'race: all six answered 200')
	  or diag explain $results;
	is(scalar(grep { $_ && !$_->{duplicate} } @$results), 1, 'race: exactly one not a duplicate');
	is(completed_events($job), 1, 'race: exactly one completed event');
	is(ProvisionTest::job_row($node, $job)->{attempts}, 1, 'race: one attempt counted');
}

# --- different deliveries for the same job at once: they serialize ---
{
	my ($agent, $job) = ProvisionTest::new_job($node, status => 'dispatched');
	my $results = ProvisionTest::fork_clients(6, sub {
		my ($i) = @_;
		my $r = $l->callback({ job_id => $job, status => 'provisioning' }, delivery => "dedup-same-job-$i");
		return { status => $r->{status}, applied => $r->{json}{applied} ? 1 : 0 };
	});
	is(scalar(grep { $_ && $_->{status} == 200 } @$results), 6, 'same job: all six answered 200')
	  or diag explain $results;
	is(scalar(grep { $_ && $_->{applied} } @$results), 1, 'same job: exactly one applied');
	is(scalar(grep { ($_->{to_status} // '') eq 'provisioning' }
			@{ ProvisionTest::events_for_job($node, $job) }), 1, 'same job: one event into provisioning');
	is(ProvisionTest::job_row($node, $job)->{attempts}, 1, 'same job: one attempt counted');
}

# --- a failed attempt leaves no record; its retry is applied ---
{
	my ($agent, $job) = ProvisionTest::new_job($node, status => 'dispatched');
	my $nojob = '00000000-0000-4000-8000-00000000dead';
	my $r = $l->callback({ job_id => $nojob, status => 'provisioning' }, delivery => 'dedup-retry-1');
	is($r->{status}, 404, 'retry: first attempt fails (unknown job)');
	ok(!ProvisionTest::delivery_row($node, 'dedup-retry-1'), 'retry: failed attempt not recorded');
	$r = $l->callback({ job_id => $job, status => 'provisioning' }, delivery => 'dedup-retry-1');
	is($r->{status}, 200, 'retry: the next attempt with that id answers 200');
	ok($r->{json}{applied} && !$r->{json}{duplicate}, 'retry: and is applied, not a duplicate');
}

# --- no delivery id: nothing deduplicated ---
{
	my ($agent, $job) = ProvisionTest::new_job($node, status => 'dispatched');
	my $a = $l->callback({ job_id => $job, status => 'provisioning' });
	my $b = $l->callback({ job_id => $job, status => 'provisioning' });
	is($a->{status}, 200, 'no delivery id: first 200');
	is($b->{status}, 200, 'no delivery id: second 200');
	ok($a->{json}{applied} && !$a->{json}{duplicate}, 'no delivery id: first applied');
	ok(!$b->{json}{applied} && !$b->{json}{duplicate},
		'no delivery id: second is a no-op, not a duplicate');
}

# The listener counted the duplicates (one per scheme, five in the race).
my $m = $l->metrics;
is(ProvisionTest::metric_sum($m, 'provision_duplicate_deliveries_total'), 7,
	'provision_duplicate_deliveries_total counts the duplicates');

is($l->stop, 0, 'listener exits 0');

done_testing();
