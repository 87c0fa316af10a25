
# The database crashes (pg_ctl stop -m immediate) under a load of signed
# callbacks from several senders and is started again.  The same listener
# process recovers by itself; every request answered 200 is in the database;
# the senders' retries (same delivery id) of the requests that got 503 or no
# answer land exactly once; no effect is applied twice.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;
use FaultLoad;

my $tag = 'dbcrash';
my $senders = 4;

my $node = ProvisionTest::new_node('dbcrash');
ProvisionTest::create_listener_role($node);
my $l = ProvisionTest::start_listener(node => $node, user => 'provision_listener',
	args => [ '--pool', '4' ]);
my $pid = $l->pid;

my $jobs = FaultLoad::create_jobs($node, $tag, 1200);
my $t0 = time();
my $load = FaultLoad::start_senders($senders, $jobs, [$l], tag => $tag, deadline => 90);

my $before = FaultLoad::wait_delivered($node, $tag, 150, 60);
cmp_ok($before, '>=', 150, 'load is flowing before the crash');

$node->stop('immediate');
my $t_crash = time();
sleep(1);
$node->start;

ok(ProvisionTest::wait_until(sub { $l->get('/readyz')->{status} == 200 }, interval => 0.2),
	'/readyz answers 200 again after the restart');
my $recovery = time() - $t_crash;

# The load must carry on through the same listener before the senders stop.
my $after_restart = FaultLoad::delivered_count($node, $tag);
my $later = FaultLoad::wait_delivered($node, $tag, $after_restart + 150, 60);
cmp_ok($later, '>=', $after_restart + 150, 'callbacks are applied again after the restart');

FaultLoad::stop_senders($load);
my $records = FaultLoad::wait_senders($load, 120);
is($load->{lost}, 0, 'every sender finished and reported');

ok($l->running, 'the listener is still running');
is($l->pid, $pid, 'the same listener process served throughout');

my $fig = FaultLoad::check_accounting($node, $tag, $records, allowed => [ 503, 599 ]);
cmp_ok($fig->{retries}, '>', 0, 'the crash was felt (some requests were retried)');

my $m = $l->metrics;
my $reconnects = ProvisionTest::metric_sum($m, 'provision_db_reconnects_total') // 0;
cmp_ok($reconnects, '>=', 1, 'the listener counted its reconnects');
note(sprintf('dbcrash: recovered %.1fs after the crash; load ran %.1fs; reconnects %d',
	$recovery, time() - $t0, $reconnects));

done_testing();
