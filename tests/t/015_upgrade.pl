
# ALTER EXTENSION provision UPDATE from 1.0: a database created at 1.0,
# with rows in every table, updates in place to 1.1, keeps every row, runs
# the 1.1 features on the rows 1.0 left (delivery binding, run fencing,
# record_dispatch, retry_failed_jobs), ends with exactly the objects a fresh
# 1.1 install has, and is still dumped with its rows.  Before the update,
# the 1.1 library says what is missing instead of failing obscurely.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use ProvisionTest;

my $node = ProvisionTest::new_node('upgrade', extension => 0);
$node->safe_psql('provision', "CREATE EXTENSION provision VERSION '1.0'");
is($node->safe_psql('provision', "SELECT extversion FROM pg_extension WHERE extname = 'provision'"),
	'1.0', 'created at 1.0');
is( $node->safe_psql(
		'provision',
		"SELECT string_agg(source || '>' || target, ',' ORDER BY source)
		   FROM pg_extension_update_paths('provision') WHERE path IS NOT NULL"),
	'1.0>1.1',
	'the update path 1.0 -> 1.1 is installed');

# The rows of a 1.0 database, in every table: agents in every status, jobs
# in every status but one, an instance, deliveries recorded by 1.0 (no
# payload digest), events of several kinds.  They are written directly:
# the installed library is 1.1, and its functions need the 1.1 columns.
my %agent = map { $_->[0] => "e1000000-0000-4000-8000-00000000000$_->[1]" }
  (['pending', 1], ['provisioning', 2], ['running', 3], ['failed', 4], ['dispatched', 5],
	['cancelled', 6]);
my %job = map { $_ => ($agent{$_} =~ s/^e1/f1/r) } keys %agent;
$node->safe_psql(
	'provision', qq{
INSERT INTO provision.agents (id, name, status, created_at, updated_at) VALUES
  ('$agent{pending}', 'upgrade pending', 'draft', now() - interval '3 h', now() - interval '3 h'),
  ('$agent{provisioning}', 'upgrade provisioning', 'provisioning', now() - interval '3 h', now() - interval '2 h'),
  ('$agent{running}', 'upgrade running', 'active', now() - interval '3 h', now() - interval '2 h'),
  ('$agent{failed}', 'upgrade failed', 'failed', now() - interval '3 h', now() - interval '2 h'),
  ('$agent{dispatched}', 'upgrade dispatched', 'draft', now() - interval '3 h', now() - interval '3 h'),
  ('$agent{cancelled}', 'upgrade cancelled', 'draft', now() - interval '3 h', now() - interval '2 h');
INSERT INTO provision.provisioning_jobs
       (id, agent_id, status, idempotency_key, attempts, error, created_at, updated_at,
        dispatched_at, started_at, completed_at, failed_at, last_heartbeat_at) VALUES
  ('$job{pending}', '$agent{pending}', 'pending', 'stripe:evt_1', 0, NULL,
   now() - interval '3 h', now() - interval '3 h', NULL, NULL, NULL, NULL, NULL),
  ('$job{provisioning}', '$agent{provisioning}', 'provisioning', 'stripe:evt_2', 1, NULL,
   now() - interval '3 h', now() - interval '2 h', now() - interval '3 h', now() - interval '2 h',
   NULL, NULL, now() - interval '1 min'),
  ('$job{running}', '$agent{running}', 'running', NULL, 1, NULL,
   now() - interval '3 h', now() - interval '2 h', now() - interval '3 h', now() - interval '2 h',
   now() - interval '2 h', NULL, now() - interval '1 min'),
  ('$job{failed}', '$agent{failed}', 'failed', NULL, 1, 'hcloud: quota exceeded',
   now() - interval '3 h', now() - interval '2 h', now() - interval '3 h', now() - interval '3 h',
   NULL, now() - interval '2 h', NULL),
  ('$job{dispatched}', '$agent{dispatched}', 'dispatched', NULL, 0, NULL,
   now() - interval '3 h', now() - interval '3 h', now() - interval '3 h', NULL, NULL, NULL, NULL),
  ('$job{cancelled}', '$agent{cancelled}', 'cancelled', NULL, 0, NULL,
   now() - interval '3 h', now() - interval '2 h', NULL, NULL, NULL, NULL, NULL);
INSERT INTO provision.agent_instances
       (agent_id, job_id, server_id, server_ip, tailscale_ip, created_at, updated_at, last_heartbeat_at)
VALUES ('$agent{running}', '$job{running}', '4711', '203.0.113.10', '100.64.0.10',
        now() - interval '2 h', now() - interval '2 h', now() - interval '1 min');
INSERT INTO provision.callback_deliveries (delivery_id, job_id, received_at, result) VALUES
  ('v10-provisioning', '$job{provisioning}', now() - interval '2 h',
   jsonb_build_object('job_id', '$job{provisioning}', 'agent_id', '$agent{provisioning}',
                      'action', 'status', 'applied', true, 'duplicate', false,
                      'job_status', 'provisioning', 'agent_status', 'provisioning')),
  ('v10-running', '$job{running}', now() - interval '2 h',
   jsonb_build_object('job_id', '$job{running}', 'agent_id', '$agent{running}',
                      'action', 'completed', 'applied', true, 'duplicate', false,
                      'job_status', 'running', 'agent_status', 'active'));
INSERT INTO provision.events (at, job_id, agent_id, kind, from_status, to_status, detail)
SELECT now() - interval '3 h', j.id, j.agent_id, 'enqueued', NULL, 'pending', NULL
  FROM provision.provisioning_jobs j;
INSERT INTO provision.events (at, job_id, agent_id, kind, from_status, to_status, detail) VALUES
  (now() - interval '2 h', '$job{provisioning}', '$agent{provisioning}', 'status', 'dispatched', 'provisioning',
   '{"delivery_id": "v10-provisioning"}'),
  (now() - interval '2 h', '$job{running}', '$agent{running}', 'completed', 'provisioning', 'running',
   '{"delivery_id": "v10-running", "server_id": "4711"}'),
  (now() - interval '2 h', '$job{failed}', '$agent{failed}', 'failed', 'provisioning', 'failed',
   '{"error": "hcloud: quota exceeded"}'),
  (now() - interval '2 h', '$job{cancelled}', '$agent{cancelled}', 'status', 'pending', 'cancelled', NULL);
});

my @tables = (
	[ 'agents',              'id',          [] ],
	[ 'provisioning_jobs',   'id',          [ 'workflow_run_id', 'workflow_run_url' ] ],
	[ 'agent_instances',     'id',          [] ],
	[ 'callback_deliveries', 'delivery_id', ['payload_sha256'] ],
	[ 'events',              'id',          [] ]);

# Every row as JSON, without the columns 1.1 added (null on every old row).
sub rows
{
	my ($db, $table, $key, $new) = @_;
	my $without = join('', map { " - '$_'" } @$new);
	return $node->safe_psql($db,
		"SELECT to_jsonb(t)$without FROM provision.$table AS t ORDER BY $key");
}
my %before = map { $_->[0] => rows('provision', @$_) } @tables;
my $events_seq = $node->safe_psql('provision',
	'SELECT last_value, is_called FROM provision.events_id_seq');

# The 1.1 library on the 1.0 objects: a clear error naming what is missing
# and what to run, and nothing changed.
my ($rc, $out, $err) = $node->psql('provision',
	"SELECT provision.update_job_status('$job{dispatched}', 'provisioning')");
isnt($rc, 0, 'before the update: a status change fails');
like($err, qr/ERROR:  column provision\.provisioning_jobs\.workflow_run_id does not exist/,
	'before the update: the error names the missing column');
like($err, qr/HINT:  Run ALTER EXTENSION provision UPDATE\./,
	'before the update: the hint says what to run');
($rc, $out, $err) = $node->psql('provision',
	"SELECT provision.handle_callback('{\"job_id\": \"$job{provisioning}\", \"status\": \"provisioning\"}', 'v10-provisioning')"
);
like($err, qr/column provision\.callback_deliveries\.payload_sha256 does not exist/,
	'before the update: a redelivery names the missing digest column');
is(rows('provision', @{ $tables[1] }), $before{provisioning_jobs},
	'before the update: no job changed');

$node->safe_psql('provision', 'ALTER EXTENSION provision UPDATE');
is($node->safe_psql('provision', "SELECT extversion FROM pg_extension WHERE extname = 'provision'"),
	'1.1', 'updated to 1.1');

# Every row is still there, as it was, and the new columns are null.
for my $t (@tables)
{
	my ($table, $key, $new) = @$t;
	is(rows('provision', @$t), $before{$table}, "every row of $table kept");
	for my $column (@$new)
	{
		is($node->safe_psql('provision', "SELECT count(*) FROM provision.$table WHERE $column IS NOT NULL"),
			0, "$table.$column is null on every old row");
	}
}
is($node->safe_psql('provision', 'SELECT last_value, is_called FROM provision.events_id_seq'),
	$events_seq, 'the events sequence kept its position');

# The 1.1 features on the old rows.  A delivery recorded by 1.0 has no
# digest: the same job is a duplicate whatever the payload, another job is
# refused.
is( $node->safe_psql(
		'provision',
		"SELECT provision.handle_callback('{\"job_id\": \"$job{provisioning}\", \"status\": \"heartbeat\"}',
		                                  'v10-provisioning') ->> 'duplicate'"),
	'true',
	'a 1.0 delivery is still a duplicate for its job');
($rc, $out, $err) = $node->psql('provision',
	"SELECT provision.handle_callback('{\"job_id\": \"$job{dispatched}\", \"status\": \"provisioning\"}', 'v10-provisioning')"
);
like($err, qr/ERROR:  delivery id "v10-provisioning" was already used for another callback/,
	'a 1.0 delivery id with another job is refused');
like($err, qr/DETAIL:  It was recorded for another job\./, 'the refusal says the job differs');
is( $node->safe_psql(
		'provision',
		"SELECT provision.handle_callback('{\"job_id\": \"$job{dispatched}\", \"status\": \"provisioning\", \"run_id\": 9001}',
		                                  'v11-1') ->> 'job_status'"),
	'provisioning',
	'an old dispatched job: the first callback with run_id is applied');
is( $node->safe_psql(
		'provision',
		"SELECT workflow_run_id, (SELECT count(*) FROM provision.events
		                           WHERE job_id = '$job{dispatched}' AND kind = 'run')
		   FROM provision.provisioning_jobs WHERE id = '$job{dispatched}'"),
	'9001|1',
	'and records its run with one run event');
is( $node->safe_psql(
		'provision',
		"SELECT octet_length(payload_sha256) FROM provision.callback_deliveries WHERE delivery_id = 'v11-1'"),
	'32',
	'a new delivery is recorded with its payload digest');
($rc, $out, $err) = $node->psql('provision',
	"SELECT provision.handle_callback('{\"job_id\": \"$job{dispatched}\", \"status\": \"heartbeat\", \"run_id\": 9002}')"
);
like($err, qr/ERROR:  job \Q$job{dispatched}\E belongs to workflow run 9001, not 9002/,
	'another run is fenced off');
like($err, qr/DETAIL:  current status: provisioning\nHINT:  workflow_run_id: 9001/,
	'with the DETAIL and HINT the listener reads');
is( $node->safe_psql(
		'provision',
		"SELECT status || ' ' || workflow_run_id || ' ' || workflow_run_url
		   FROM provision.record_dispatch('$job{provisioning}', 9100,
		                                  'https://github.com/acme/infra/actions/runs/9100')"),
	'provisioning 9100 https://github.com/acme/infra/actions/runs/9100',
	'record_dispatch on an old provisioning job');
is($node->safe_psql('provision', 'SELECT provision.retry_failed_jobs()'),
	'1', 'retry_failed_jobs retries the old failed job');
is( $node->safe_psql(
		'provision',
		"SELECT j.status || ' ' || e.kind || ' ' || (e.detail ->> 'failed_job_id')
		   FROM provision.provisioning_jobs j JOIN provision.events e ON e.job_id = j.id
		  WHERE j.idempotency_key = 'retry:$job{failed}'"),
	"pending retried $job{failed}",
	'with a retried event naming it');
($rc, $out, $err) = $node->psql('provision',
	"SELECT provision.update_job_status('$job{failed}', 'provisioning')");
like($err,
	qr/ERROR:  cannot move job \Q$job{failed}\E from status failed to provisioning: agent \Q$agent{failed}\E has another open job/,
	'a re-run of the old failed job is refused while its retry is open');
is( $node->safe_psql(
		'provision',
		"SELECT provision.handle_callback('{\"job_id\": \"$job{running}\", \"status\": \"heartbeat\"}') ->> 'instance_id'
		    = (SELECT id::text FROM provision.agent_instances WHERE agent_id = '$agent{running}')"),
	't',
	'the old instance is still the running job\'s');

# The updated database has exactly the objects of a fresh 1.1 install.
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION provision');
my $updated = ProvisionTest::extension_catalog($node, 'provision');
my $fresh = ProvisionTest::extension_catalog($node, 'fresh');
for my $aspect (sort keys %$fresh)
{
	isnt($fresh->{$aspect}, '', "fresh install: $aspect listed");
	# Line by line, so that a difference shows as the one object that differs.
	is_deeply(
		[ split /\n/, $updated->{$aspect} ],
		[ split /\n/, $fresh->{$aspect} ],
		"updated schema: $aspect as in a fresh install");
}
like($updated->{functions}, qr/provision\.record_dispatch\(uuid,bigint,text\)/,
	'the catalog lists the 1.1 functions');
like($updated->{extension}, qr/\{provision\.agents,provision\.provisioning_jobs,provision\.agent_instances,provision\.callback_deliveries,provision\.events,provision\.events_id_seq\}/,
	'every table is still registered with pg_extension_config_dump');

# And pg_dump still saves the rows, the new columns included.
my $tempdir = PostgreSQL::Test::Utils::tempdir;
$node->command_ok(
	[ 'pg_dump', '--format', 'custom', '--file', "$tempdir/updated.dump",
		'--dbname', $node->connstr('provision') ],
	'pg_dump of the updated database');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok(
	[ 'pg_restore', '--exit-on-error', '--dbname', $node->connstr('restored'),
		"$tempdir/updated.dump" ],
	'pg_restore of it');
for my $t (@tables)
{
	my ($table, $key) = @$t;
	is( $node->safe_psql('restored', "SELECT to_jsonb(t) FROM provision.$table AS t ORDER BY $key"),
		$node->safe_psql('provision', "SELECT to_jsonb(t) FROM provision.$table AS t ORDER BY $key"),
		"restored: every row of $table, new columns included");
}

$node->stop;
done_testing();
