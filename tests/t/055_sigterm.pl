
# SIGTERM during a burst of callbacks from parallel clients (half of them on
# keep-alive connections): the listener stops accepting, finishes what is in
# flight, exits 0 promptly, and every request it answered 200 is committed in
# the database (job running, instance row, delivery recorded).  SIGINT
# behaves the same on an idle listener.

use strict;
use warnings;

use HTTP::Tiny;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;

my $clients = 4;
my $per_client = 300;
my $node = ProvisionTest::new_node('sigterm');
my $l = ProvisionTest::start_listener(node => $node, args => [ '--pool', '4' ]);

ProvisionTest::query_scalar($node,
	"INSERT INTO provision.agents (name) SELECT 'burst-' || g FROM generate_series(1, "
	  . $clients * $per_client . ') g');
ProvisionTest::query_scalar($node,
	"SELECT provision.update_job_status(provision.enqueue_job(id), 'provisioning')
	   FROM provision.agents WHERE name LIKE 'burst-%'");
my @jobs = split /\n/, ProvisionTest::query_scalar($node,
	'SELECT id FROM provision.provisioning_jobs ORDER BY id');
is(scalar @jobs, $clients * $per_client, 'burst jobs created');

my $start_file = PostgreSQL::Test::Utils::tempdir() . '/go';
my $t_term;
my $results;
{
	# The parent sends SIGTERM once the burst is well under way; the clients
	# run until the listener refuses them or their slice is done.
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		# Watchdog child: only signals, never touches Test::More.
		my $ok = ProvisionTest::wait_until(sub {
			ProvisionTest::query_scalar($node,
				"SELECT count(*) >= 40 FROM provision.provisioning_jobs WHERE status = 'running'") eq 't';
		}, interval => 0.05);
		open(my $fh, '>', $start_file);
		print $fh time();
		close $fh;
		kill 'TERM', $l->pid;
		POSIX::_exit($ok ? 0 : 1);
	}
	$results = ProvisionTest::fork_clients($clients, sub {
		my ($i) = @_;
		my $http = HTTP::Tiny->new(timeout => 20, keep_alive => $i % 2);
		my @sent;
		for my $job (@jobs[ $i * $per_client .. ($i + 1) * $per_client - 1 ])
		{
			my $body = ProvisionTest::encode_json({
				job_id => $job, status => 'running', server_id => "srv-$job",
				server_ip => '192.0.2.7', tailscale_ip => '100.64.7.7' });
			my $h = $l->callback_headers($body, delivery => "burst-$job");
			my $r = $http->request('POST', $l->url('/webhooks/github'),
				{ headers => $h, content => $body });
			push @sent, [ $job, $r->{status}, $r->{status} == 599 ? $r->{content} : '' ];
			last if $r->{status} == 599;
		}
		return \@sent;
	}, timeout => 60);
	waitpid($pid, 0);
	is($? >> 8, 0, 'the burst was under way when SIGTERM was sent');
	if (open(my $fh, '<', $start_file))
	{
		$t_term = <$fh>;
	}
}

my $code = $l->wait_exit(30);
my $t_exit = time();
is($code, 0, 'listener exits 0 after SIGTERM during the burst');
cmp_ok($t_exit - ($t_term // 0), '<', 15, 'and exits promptly (keep-alive clients do not hold it)');

my @all = map { @{ $_ // [] } } @$results;
is(scalar(grep { !defined } @$results), 0, 'every client finished');
my @ok = grep { $_->[1] == 200 } @all;
cmp_ok(scalar @ok, '>=', 40, 'many requests answered 200 before the stop');
my @other = grep { $_->[1] != 200 && $_->[1] != 599 } @all;
is(scalar(grep { $_->[1] != 503 } @other), 0, 'no answer other than 200 (or 503 while stopping)')
  or diag explain \@other;
note(scalar(@ok) . ' of ' . scalar(@all) . ' requests answered 200');
my @dropped = grep { $_->[1] == 599 && $_->[2] !~ /refused/i } @all;
note(scalar(@dropped) . ' requests lost their connection at the stop: '
	  . join('; ', map { $_->[2] } @dropped));

my %running = map { $_ => 1 } split /\n/, ProvisionTest::query_scalar($node,
	"SELECT j.id FROM provision.provisioning_jobs j
	   JOIN provision.agent_instances i ON i.job_id = j.id
	   JOIN provision.callback_deliveries d ON d.delivery_id = 'burst-' || j.id
	  WHERE j.status = 'running'");
my @missing = grep { !$running{ $_->[0] } } @ok;
is(scalar @missing, 0, 'every job answered 200 is running with its instance and delivery')
  or diag explain \@missing;

ok(!defined $l->get('/healthz', timeout => 2)->{status}
	  || $l->get('/healthz', timeout => 2)->{status} == 599,
	'nothing listens after the exit');

# SIGINT on an idle listener.
my $l2 = ProvisionTest::start_listener(node => $node);
is($l2->stop(signal => 'INT', timeout => 15), 0, 'SIGINT: exit 0');

done_testing();
