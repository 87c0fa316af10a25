
# Two listeners on one database, as behind a load balancer's address list.
# Senders work in pairs on the same jobs with the same delivery ids; each
# sender alternates between the listeners, and the two senders of a pair
# start on different ones, so every delivery reaches both listeners at about
# the same moment.  Every copy is answered 200; each delivery has exactly one
# effect (one answer applied, the other a duplicate, one event per state
# change).  Midway one listener is stopped (SIGTERM) and started again: the
# senders' retries through the other listener keep the same accounting.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;
use FaultLoad;

my $tag = 'two';
my $pairs = 3;
my @secrets = (ProvisionTest::random_secret(whsec => 1));

my $node = ProvisionTest::new_node('two');
my $role = ProvisionTest::create_listener_role($node);
my %lopts = (node => $node, user => $role, secrets => \@secrets, args => [ '--pool', '3' ]);
my @l = (ProvisionTest::start_listener(%lopts), ProvisionTest::start_listener(%lopts));

# Both senders of a pair work through all of their jobs (no early stop), so
# every delivery is sent twice.
my $jobs = FaultLoad::create_jobs($node, $tag, 360);
my @loads;
my $t0 = time();
for my $p (0 .. $pairs - 1)
{
	my @mine = @$jobs[ grep { $_ % $pairs == $p } 0 .. $#$jobs ];
	# Two senders over the same jobs: sender 0 starts on listener 0,
	# sender 1 on listener 1.
	push @loads, FaultLoad::start_senders(2, \@mine, \@l, tag => $tag, share => 1,
		scheme => 'standard', deadline => 60);
}

my $seen = FaultLoad::wait_delivered($node, $tag, 150, 60);
cmp_ok($seen, '>=', 150, 'load is flowing through both listeners');

# One listener goes away and comes back on its port; the senders retry its
# lost answers on the other.
my $port = $l[1]->port;
is($l[1]->stop, 0, 'listener 1 stops on SIGTERM under load');
sleep(0.5);
$l[1] = ProvisionTest::start_listener(%lopts, port => $port);
my $later = FaultLoad::wait_delivered($node, $tag, 3 * @$jobs, 90);
is($later, 3 * @$jobs, 'every delivery is applied in the end');

my @records;
my $lost = 0;
for my $h (@loads)
{
	push @records, @{ FaultLoad::wait_senders($h, 120) };
	$lost += $h->{lost};
}
is($lost, 0, 'every sender finished and reported');

my %copies;
$copies{ $_->{id} }++ for @records;
my $both = grep { $_ == 2 } values %copies;
is($both, scalar(keys %copies), 'every delivery was sent by both senders of its pair');
my %first;
$first{ $_->{id} }{ $_->{ports}[0] } = 1 for @records;
is(scalar(grep { keys %{ $first{$_} } != 2 } keys %first), 0,
	'the two copies of each delivery went first to different listeners');

my $fig = FaultLoad::check_accounting($node, $tag, \@records, allowed => [ 503, 599 ], answers => 2);
note(sprintf('two listeners: deliveries sent to both %d of %d; load ran %.1fs',
	$both, scalar(keys %copies), time() - $t0));

done_testing();
