
# /metrics counts exactly: after a known set of requests every counter moved
# by exactly the expected amount (requests by endpoint and code, signature
# failures, duplicates), the duration histogram's _count matches the request
# counter of its endpoint and its buckets are cumulative, and the pool gauges
# show the configured size with nothing borrowed at rest. Callbacks the
# database refuses (400, 404, 409) are not counted as database errors.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use ProvisionTest;

my $node = ProvisionTest::new_node('metrics');
my $l = ProvisionTest::start_listener(node => $node, args => [ '--pool', '3' ]);

my $req = 'provision_http_requests_total';
my $hist = 'provision_http_request_duration_seconds';

my $r = $l->get('/metrics');
is($r->{status}, 200, 'GET /metrics answers 200');
like($r->{headers}{'content-type'} // '', qr{^text/plain}, 'Prometheus text content type');
for my $name ($req, "${hist}_bucket", "${hist}_count", "${hist}_sum",
	'provision_signature_failures_total', 'provision_duplicate_deliveries_total',
	'provision_db_errors_total', 'provision_db_reconnects_total',
	'provision_db_pool_size', 'provision_db_pool_in_use')
{
	like($r->{content}, qr/^\Q$name\E[{ ]/m, "exposes $name");
}
like($r->{content}, qr/^# TYPE \Q$hist\E histogram$/m, 'duration is a histogram');

my $before = $l->metrics;

# The known traffic.
my (undef, $job) = ProvisionTest::new_job($node, status => 'dispatched');
my %expect;    # "endpoint code" => count
my @statuses;
push @statuses, $l->callback({ job_id => $job, status => 'provisioning' }, delivery => 'm-1')->{status};
push @statuses, $l->callback({ job_id => $job, status => 'provisioning' }, delivery => 'm-1')->{status};
push @statuses, $l->callback({ job_id => $job, status => 'heartbeat' }, scheme => 'standard')->{status};
push @statuses, $l->callback({ job_id => $job, status => 'heartbeat' },
	path => '/api/webhooks/github')->{status};
push @statuses, $l->callback({ job_id => $job, status => 'heartbeat' },
	secret => ProvisionTest::random_secret())->{status};
push @statuses, $l->callback({ job_id => $job, status => 'heartbeat' },
	scheme => 'standard', timestamp => time() - 3600)->{status};
push @statuses, $l->callback({ job_id => $job, status => 'heartbeat' }, scheme => 'none')->{status};
push @statuses, $l->callback('not json')->{status};
push @statuses, $l->get('/healthz')->{status};
push @statuses, $l->get('/healthz')->{status};
push @statuses, $l->get('/readyz')->{status};
push @statuses, $l->get('/nowhere')->{status};
push @statuses, $l->get('/webhooks/github')->{status};
is_deeply(\@statuses, [ 200, 200, 200, 200, 401, 401, 401, 400, 200, 200, 200, 404, 405 ],
	'the traffic got the expected answers');

# GET /metrics itself is counted after it renders, so the "before" scrape
# shows up now as one metrics 200.
my $after = $l->metrics;

sub delta
{
	my ($name, $labels) = @_;
	return (ProvisionTest::metric_sum($after, $name, $labels) // 0)
	  - (ProvisionTest::metric_sum($before, $name, $labels) // 0);
}

my $webhook_endpoints = sub {
	my ($code) = @_;
	my $total = 0;
	for my $series (keys %$after)
	{
		next unless $series =~ /^\Q$req\E\{/ && $series =~ /code="$code"/;
		next unless $series =~ /endpoint="([^"]*)"/;
		my $ep = $1;
		next if $ep =~ /healthz|readyz|metrics|other/;
		$total += delta($req, { endpoint => $ep, code => $code });
	}
	return $total;
};

is($webhook_endpoints->(200), 4, 'callback endpoints: 4 more 200s');
is($webhook_endpoints->(401), 3, 'callback endpoints: 3 more 401s');
is($webhook_endpoints->(400), 1, 'callback endpoints: 1 more 400');
is($webhook_endpoints->(405), 1, 'callback endpoints: 1 more 405');

# Endpoint labels of the fixed routes, whatever spelling the listener uses.
my %label;
for my $series (keys %$after)
{
	next unless $series =~ /^\Q$req\E\{.*endpoint="([^"]*)"/;
	my $ep = $1;
	for my $name ('healthz', 'readyz', 'metrics')
	{
		$label{$name} = $ep if $ep =~ /\Q$name\E/;
	}
	$label{other} = $ep if $ep =~ /other|unknown|not_found/;
}
is(delta($req, { endpoint => $label{healthz} // 'healthz', code => 200 }), 2, '/healthz: 2 more 200s');
is(delta($req, { endpoint => $label{readyz} // 'readyz', code => 200 }), 1, '/readyz: 1 more 200');
is(delta($req, { endpoint => $label{metrics} // 'metrics', code => 200 }), 1, '/metrics: 1 more 200');
is(delta($req, { code => 404 }), 1, 'one more 404 in all');
is(delta($req, {}), 14, 'requests in all: the 13 sent plus the first scrape');

is(delta('provision_signature_failures_total'),   3, 'signature failures: 3 more');
is(delta('provision_duplicate_deliveries_total'), 1, 'duplicates: 1 more');
is(delta('provision_db_errors_total'),            0, 'no database errors');

# Histogram consistency per endpoint.
my %endpoints = map { /endpoint="([^"]*)"/ ? ($1 => 1) : () } grep { /^\Q$req\E\{/ } keys %$after;
for my $ep (sort keys %endpoints)
{
	my $count = ProvisionTest::metric_sum($after, "${hist}_count", { endpoint => $ep });
	is($count, ProvisionTest::metric_sum($after, $req, { endpoint => $ep }),
		"histogram _count of $ep equals its request count");
	my @buckets = sort { $a->[0] <=> $b->[0] }
	  map { /le="([^"]+)"/ ? [ ($1 eq '+Inf' ? 9**9**9 : $1), $after->{$_} ] : () }
	  grep { /^\Q${hist}_bucket\E\{/ && /endpoint="\Q$ep\E"/ } keys %$after;
	my $monotonic = 1;
	for my $i (1 .. $#buckets)
	{
		$monotonic = 0 if $buckets[$i][1] < $buckets[ $i - 1 ][1];
	}
	ok($monotonic && @buckets && $buckets[-1][0] == 9**9**9 && $buckets[-1][1] == $count,
		"buckets of $ep are cumulative and +Inf equals _count");
}

is(ProvisionTest::metric_sum($after, 'provision_db_pool_size'),   3, 'pool size gauge is --pool');
is(ProvisionTest::metric_sum($after, 'provision_db_pool_in_use'), 0, 'no connection in use at rest');

# Callbacks the database refuses are the sender's errors, not the database's:
# they are answered 400, 404 and 409 and leave provision_db_errors_total alone.
$before = $l->metrics;
my (undef, $running) = ProvisionTest::new_job($node, status => 'running');
my @refused = (
	$l->callback({ job_id => $job, status => 'exploded' })->{status},
	$l->callback({ job_id => '00000000-0000-4000-8000-000000000000', status => 'provisioning' })
	  ->{status},
	$l->callback({ job_id => $running, status => 'failed' })->{status});
is_deeply(\@refused, [ 400, 404, 409 ], 'the database refused three callbacks (22023, P0002, 55000)');
$after = $l->metrics;
is(delta('provision_db_errors_total'), 0, 'refused callbacks are not database errors');

is($l->stop, 0, 'listener exits 0');

done_testing();
