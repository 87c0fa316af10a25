
# Failover: a primary with a synchronous streaming standby (made with
# pg_basebackup); the listener is given both in one conninfo with
# target_session_attrs=read-write.  Under a load of signed callbacks the
# primary is stopped (immediate) and the standby promoted.  The same
# listener process carries on against the new primary without a restart;
# every request answered 200 is on the new primary; the senders' retries of
# the others land exactly once there.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;
use FaultLoad;

my $tag = 'failover';

my $primary = ProvisionTest::new_node('primary', conf => <<'EOF');
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_log_hints = on
hot_standby = on
EOF
my $role = ProvisionTest::create_listener_role($primary);
$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;
$primary->append_conf('postgresql.conf', "synchronous_standby_names = '*'");
$primary->reload;
ok($primary->poll_query_until('postgres',
	"SELECT sync_state = 'sync' FROM pg_stat_replication", 't'),
	'the standby replicates synchronously');

my $conninfo = sprintf(
	'host=%s,%s port=%d,%d dbname=provision user=%s target_session_attrs=read-write connect_timeout=2',
	$primary->host, $standby->host, $primary->port, $standby->port, $role);
my $l = ProvisionTest::start_listener(database => $conninfo, args => [ '--pool', '4' ]);
my $pid = $l->pid;

my $jobs = FaultLoad::create_jobs($primary, $tag, 1500);
$primary->wait_for_catchup($standby);
my $t0 = time();
my $load = FaultLoad::start_senders(4, $jobs, [$l], tag => $tag, deadline => 90);

my $before = FaultLoad::wait_delivered($primary, $tag, 150, 60);
cmp_ok($before, '>=', 150, 'load is flowing before the failover');

$primary->stop('immediate');
my $t_fail = time();
$standby->promote;
ok($standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()', 't'),
	'the standby is promoted');
ok(ProvisionTest::wait_until(sub { $l->get('/readyz')->{status} == 200 }, interval => 0.2),
	'/readyz answers 200 again, from the new primary');
my $switch = time() - $t_fail;

my $c = FaultLoad::delivered_count($standby, $tag);
my $later = FaultLoad::wait_delivered($standby, $tag, $c + 150, 60);
cmp_ok($later, '>=', $c + 150, 'callbacks are applied on the new primary');

FaultLoad::stop_senders($load);
my $records = FaultLoad::wait_senders($load, 120);
is($load->{lost}, 0, 'every sender finished and reported');
ok($l->running, 'the listener is still running');
is($l->pid, $pid, 'the same listener process served throughout');

my $fig = FaultLoad::check_accounting($standby, $tag, $records, allowed => [503]);
cmp_ok($fig->{retries}, '>', 0, 'the failover was felt (some requests were retried)');
note(sprintf('failover: the listener served again %.1fs after the primary stopped; load ran %.1fs; reconnects %d',
	$switch, time() - $t0,
	ProvisionTest::metric_sum($l->metrics, 'provision_db_reconnects_total') // 0));

done_testing();
