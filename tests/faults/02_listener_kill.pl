
# The listener is killed with SIGKILL under a load of signed callbacks and
# started again on the same port.  Requests in flight lose their answer; the
# senders retry them (same delivery id) and each lands exactly once: every
# request answered 200 is in the database, no effect is applied twice, and
# there is no partial state (a job running without its instance, an
# instance without its job running and its completed event).  Killed twice;
# six senders share four database connections, so requests are also queued
# inside the listener when it dies.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;
use FaultLoad;

my $tag = 'lkill';
my $senders = 6;
my @secrets = (ProvisionTest::random_secret());

my $node = ProvisionTest::new_node('lkill');
ProvisionTest::create_listener_role($node);
my %lopts = (node => $node, user => 'provision_listener', secrets => \@secrets,
	args => [ '--pool', '4' ]);
my $l = ProvisionTest::start_listener(%lopts);
my $port = $l->port;

my $jobs = FaultLoad::create_jobs($node, $tag, 1500);
my $t0 = time();
my $load = FaultLoad::start_senders($senders, $jobs, [$l], tag => $tag, deadline => 90);

my $seen = FaultLoad::wait_delivered($node, $tag, 150, 60);
cmp_ok($seen, '>=', 150, 'load is flowing before the first kill');

my @downtime;
for my $round (1, 2)
{
	my $old = $l->pid;
	$l->signal('KILL');
	is($l->wait_exit(10), 128 + 9, "round $round: the listener died of SIGKILL");
	my $t_kill = time();
	# Deliveries committed before the kill but whose answer was lost stay
	# committed; nothing can commit while no listener runs.
	sleep(0.5);
	$l = ProvisionTest::start_listener(%lopts, port => $port);
	push @downtime, time() - $t_kill;
	isnt($l->pid, $old, "round $round: a new listener serves on the same port");
	FaultLoad::check_consistency($node, $tag);

	my $c = FaultLoad::delivered_count($node, $tag);
	my $later = FaultLoad::wait_delivered($node, $tag, $c + 150, 60);
	cmp_ok($later, '>=', $c + 150, "round $round: callbacks are applied again after the restart");
}

FaultLoad::stop_senders($load);
my $records = FaultLoad::wait_senders($load, 120);
is($load->{lost}, 0, 'every sender finished and reported');

my $fig = FaultLoad::check_accounting($node, $tag, $records, allowed => [ 503, 599 ]);
cmp_ok($fig->{retries}, '>', 0, 'the kills were felt (some requests were retried)');
note(sprintf('lkill: listener down %s s per kill; load ran %.1fs',
	join(', ', map { sprintf('%.1f', $_) } @downtime), time() - $t0));

done_testing();
