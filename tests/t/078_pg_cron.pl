
# Scheduling with pg_cron exactly as docs/dba-guide.md says: the cluster
# takes the guide's postgresql.conf lines (pg_cron preloaded, jobs in
# background workers), the guide's SQL creates provision_cron and schedules
# expire_stale_jobs, prune_history and retry_failed_jobs as that role; the
# test then waits for pg_cron's runs and sees their effect: a stale job
# failed with "heartbeat timeout", history older than provision_cron's own
# retention setting gone, younger history kept, a failed job retried. Before that, the stalls the guide warns about: without
# the preload CREATE EXTENSION pg_cron fails, and provision_cron cannot
# schedule for itself.

use strict;
use warnings;

use IPC::Run ();
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);
use ProvisionTest;

my $pkglibdir = `pg_config --pkglibdir`;
chomp $pkglibdir;
plan skip_all => "pg_cron is not installed in $pkglibdir (Debian: postgresql-15-cron; scripts/deps test installs it)"
  unless -f "$pkglibdir/pg_cron.so";

my $guide = slurp_file(ProvisionTest::repo_root() . '/docs/dba-guide.md');

# The fenced blocks of one section of the guide, as [info string, text].
sub blocks_of_section
{
	my ($heading) = @_;
	my ($section) = $guide =~ /^#+ \Q$heading\E\n(.*?)(?=^## )/ms;
	BAIL_OUT("docs/dba-guide.md has no section \"$heading\"") unless defined $section;
	my @blocks;
	while ($section =~ /^( *)```(\S*)\n(.*?)^\1```$/msg)
	{
		my ($indent, $info, $text) = ($1, $2, $3);
		$text =~ s/^$indent//mg;
		push @blocks, [ $info, $text ];
	}
	return @blocks;
}

my ($conf) = map { $_->[1] } grep { $_->[0] eq 'ini' && $_->[1] =~ /^# postgresql\.conf/ }
  blocks_of_section('With pg_cron');
ok($conf, "the guide shows pg_cron's postgresql.conf lines");
like($conf, qr/^shared_preload_libraries = 'pg_cron'/m, 'they preload pg_cron');
my ($schedule) = map { $_->[1] } grep { $_->[0] eq 'sql' && $_->[1] =~ /cron\.schedule_in_database/ }
  blocks_of_section('With pg_cron');
ok($schedule, 'the guide shows how to schedule the jobs');
my ($roles) = map { $_->[1] } grep { $_->[0] eq 'sql' && $_->[1] =~ /CREATE ROLE provision_cron/ }
  blocks_of_section('Roles and privileges');
ok($roles, "the guide shows provision_cron's grants");

# psql($node, $dbname, $sql, %opts): runs $sql as psql would from the guide
# (meta-commands included); returns (exit status, stdout, stderr).
sub psql
{
	my ($node, $dbname, $sql, %opts) = @_;
	my ($out, $err) = ('', '');
	my @cmd = ('psql', '-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-h', $node->host,
		'-p', $node->port, '-d', $dbname);
	push @cmd, '-U', $opts{user} if $opts{user};
	IPC::Run::run(\@cmd, '<', \$sql, '>', \$out, '2>', \$err,
		IPC::Run::timeout(ProvisionTest::timeout()));
	chomp $out;
	return ($? >> 8, $out, $err);
}

# ---- without the preload --------------------------------------------------------
my $plain = ProvisionTest::new_node('plain');
my ($rc, $out, $err) = psql($plain, 'postgres', 'CREATE EXTENSION pg_cron;');
isnt($rc, 0, 'without shared_preload_libraries, CREATE EXTENSION pg_cron fails');
like($err, qr/unrecognized configuration parameter "cron\.database_name"/,
	'with the error the guide quotes');
$plain->stop;

# ---- the guide's cluster -------------------------------------------------------
my $node = ProvisionTest::new_node('cron', conf => $conf);
($rc, $out, $err) = psql($node, 'provision', $roles);
is($rc, 0, "the guide's roles block runs") or diag($err);

# provision_cron may not schedule for itself: it has no rights on schema cron.
($rc, $out, $err) = psql($node, 'postgres', 'CREATE EXTENSION pg_cron;');
is($rc, 0, 'with the preload, CREATE EXTENSION pg_cron works') or diag($err);
($rc, $out, $err) = psql($node, 'postgres',
	q{SELECT cron.schedule_in_database('x', '* * * * *', 'SELECT 1', 'provision');},
	user => 'provision_cron');
like($err, qr/permission denied for schema cron/, 'provision_cron cannot schedule its own jobs');
$node->safe_psql('postgres', 'DROP EXTENSION pg_cron');

# The state the jobs act on: a job silent for an hour (heartbeat_timeout is
# 15min by default), history 100 days old (beyond provision_cron's 90d) and
# 60 days old (within it, beyond the default 30d).
my (undef, $stale) = ProvisionTest::new_job($node, status => 'dispatched');
my (undef, $fresh) = ProvisionTest::new_job($node, status => 'dispatched');
my (undef, $failed) = ProvisionTest::new_job($node, status => 'failed');
$node->safe_psql('provision', qq{
	UPDATE provision.provisioning_jobs SET dispatched_at = now() - interval '1 hour' WHERE id = '$stale';
	UPDATE provision.provisioning_jobs SET failed_at = now() - interval '10 minutes' WHERE id = '$failed';
	INSERT INTO provision.callback_deliveries (delivery_id, job_id, received_at, result) VALUES
	    ('old', '$stale', now() - interval '100 days', '{}'),
	    ('recent', '$stale', now() - interval '60 days', '{}');
	UPDATE provision.events SET at = now() - interval '100 days' WHERE job_id = '$stale';
	UPDATE provision.events SET at = now() - interval '60 days' WHERE job_id = '$fresh';
	ALTER ROLE provision_cron SET provision.history_retention = '90d';
});
my $old_events = $node->safe_psql('provision',
	"SELECT count(*) FROM provision.events WHERE job_id = '$stale'");
cmp_ok($old_events, '>', 0, 'the stale job has history to prune');

($rc, $out, $err) = psql($node, 'postgres', $schedule);
is($rc, 0, "the guide's scheduling block runs as written") or diag($err);
is($node->safe_psql('postgres',
		'SELECT jobname, schedule, database, username, active FROM cron.job ORDER BY jobid'),
	"provision-expire|* * * * *|provision|provision_cron|t\n"
	  . "provision-prune|17 3 * * *|provision|provision_cron|t\n"
	  . "provision-retry|* * * * *|provision|provision_cron|t",
	'the jobs are scheduled in database provision as provision_cron');

# The pruning job's daily schedule would not come round during the test: the
# same job, moved to the next minute like the expiry job.
$node->safe_psql('postgres',
	q{SELECT cron.alter_job(jobid, schedule => '* * * * *') FROM cron.job WHERE jobname = 'provision-prune'});

# pg_cron starts jobs at the top of each minute.
my $done = ProvisionTest::wait_until(
	sub {
		$node->safe_psql('postgres', q{
			SELECT count(DISTINCT jobid) FROM cron.job_run_details
			 WHERE status IN ('succeeded', 'failed')}) == 3;
	},
	timeout => 150,
	interval => 1);
ok($done, 'every job ran within the next minute');
my $runs = $node->safe_psql('postgres', q{
	SELECT DISTINCT ON (j.jobname) j.jobname, d.username, d.status, d.return_message
	  FROM cron.job_run_details d JOIN cron.job j USING (jobid)
	 ORDER BY j.jobname, d.start_time});
is($runs,
	"provision-expire|provision_cron|succeeded|SELECT 1\n"
	  . "provision-prune|provision_cron|succeeded|SELECT 1\n"
	  . "provision-retry|provision_cron|succeeded|SELECT 1",
	'each ran as provision_cron and succeeded');

my $job = ProvisionTest::job_row($node, $stale);
is($job->{status}, 'failed', 'expire_stale_jobs failed the silent job');
is($job->{error}, 'heartbeat timeout', 'with error "heartbeat timeout"');
is(ProvisionTest::job_row($node, $fresh)->{status}, 'dispatched', 'and left the recent one alone');
is($node->safe_psql('provision', "SELECT kind FROM provision.events WHERE job_id = '$stale' ORDER BY id"),
	'expired', "prune_history deleted the stale job's 100-day-old history, leaving today's expired event");
is($node->safe_psql('provision',
		"SELECT count(*) > 0 FROM provision.events WHERE job_id = '$fresh' AND at < now() - interval '50 days'"),
	't', "and kept the 60-day-old events: provision_cron's 90d retention applied, not the default 30d");
is($node->safe_psql('provision', 'SELECT string_agg(delivery_id, \',\') FROM provision.callback_deliveries'),
	'recent', 'the 100-day-old delivery is gone, the 60-day-old one stays');
is($node->safe_psql('provision',
		"SELECT status FROM provision.provisioning_jobs WHERE idempotency_key = 'retry:$failed'"),
	'pending', 'retry_failed_jobs enqueued a new job for the failed one');

done_testing();
