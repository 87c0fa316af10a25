# pg_dump / restore round trip: every table of the extension is registered
# with pg_extension_config_dump, so a dump of a database using provision
# keeps every row, in both archive and plain formats, restores in foreign
# key order, and the events identity continues after the restored rows.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use ProvisionTest;

# Database "provision" with the extension: the source of the dumps.
my $node = ProvisionTest::new_node('dump_restore');

# Fill every table through the API: agents in each status, jobs in each
# status, instances, deliveries (with a stored duplicate-able result),
# and events of every kind.
$node->safe_psql('provision', <<'SQL');
INSERT INTO provision.agents (id, name)
SELECT ('e0000000-0000-4000-8000-00000000000' || n)::uuid, 'dump-agent-' || n
  FROM generate_series(1, 7) AS n;
SELECT provision.enqueue_job(('e0000000-0000-4000-8000-00000000000' || n)::uuid,
                             'payment-' || n)
  FROM generate_series(1, 7) AS n;
SELECT count(*) FROM provision.claim_jobs(5);
SELECT provision.handle_callback(
         jsonb_build_object('job_id', j.id, 'status', 'provisioning'),
         'delivery-prov-' || a.name)
  FROM provision.provisioning_jobs j JOIN provision.agents a ON a.id = j.agent_id
 WHERE a.name IN ('dump-agent-1', 'dump-agent-2', 'dump-agent-3', 'dump-agent-4');
SELECT provision.handle_callback(
         jsonb_build_object('job_id', j.id, 'status', 'heartbeat'),
         'delivery-beat-' || a.name)
  FROM provision.provisioning_jobs j JOIN provision.agents a ON a.id = j.agent_id
 WHERE a.name IN ('dump-agent-1', 'dump-agent-2');
SELECT provision.handle_callback(
         jsonb_build_object('job_id', j.id, 'status', 'running',
                            'server_id', 4711, 'server_ip', '2001:db8::1',
                            'tailscale_ip', '100.64.0.1'),
         'delivery-run-' || a.name)
  FROM provision.provisioning_jobs j JOIN provision.agents a ON a.id = j.agent_id
 WHERE a.name = 'dump-agent-1';
SELECT provision.handle_callback(
         jsonb_build_object('job_id', j.id, 'status', 'failed',
                            'error', E'quota exceeded\nsecond line ü'),
         'delivery-fail-' || a.name)
  FROM provision.provisioning_jobs j JOIN provision.agents a ON a.id = j.agent_id
 WHERE a.name = 'dump-agent-2';
SELECT provision.update_job_status(j.id, 'cancelled')
  FROM provision.provisioning_jobs j JOIN provision.agents a ON a.id = j.agent_id
 WHERE a.name = 'dump-agent-5';
UPDATE provision.provisioning_jobs j SET started_at = now() - interval '2 hours'
  FROM provision.agents a
 WHERE a.id = j.agent_id AND a.name = 'dump-agent-3';
SELECT provision.expire_stale_jobs('1 hour');
SQL

my @tables = (
	[ 'agents',              'id' ],
	[ 'provisioning_jobs',   'id' ],
	[ 'agent_instances',     'id' ],
	[ 'callback_deliveries', 'delivery_id' ],
	[ 'events',              'id' ]);

# Every row of every table, every column, as text.
sub snapshot
{
	my ($db) = @_;
	my %rows;
	for my $t (@tables)
	{
		my ($name, $key) = @$t;
		$rows{$name} = $node->safe_psql($db,
			"SELECT t::text FROM provision.$name AS t ORDER BY $key");
	}
	$rows{events_id_seq} = $node->safe_psql($db,
		'SELECT last_value, is_called FROM provision.events_id_seq');
	return \%rows;
}

my $before = snapshot('provision');
my %expected_counts = (
	agents              => 7,
	provisioning_jobs   => 7,
	agent_instances     => 1,
	callback_deliveries => 8,);
for my $name (sort keys %expected_counts)
{
	is($node->safe_psql('provision', "SELECT count(*) FROM provision.$name"),
		$expected_counts{$name}, "source has the $name rows");
}
is( $node->safe_psql(
		'provision',
		'SELECT string_agg(DISTINCT kind, \',\' ORDER BY kind) FROM provision.events'),
	'completed,dispatched,enqueued,expired,failed,status',
	'source has events of every kind');

my $tempdir = PostgreSQL::Test::Utils::tempdir;
my $max_event = $node->safe_psql('provision', 'SELECT max(id) FROM provision.events');

for my $format ('custom', 'plain')
{
	my $file = "$tempdir/provision.$format";
	my $target = "restored_$format";
	$node->command_ok(
		[
			'pg_dump', '--format', $format, '--file', $file,
			'--dbname', $node->connstr('provision')
		],
		"pg_dump --format $format");
	$node->safe_psql('postgres', "CREATE DATABASE $target");
	if ($format eq 'custom')
	{
		$node->command_ok(
			[
				'pg_restore', '--exit-on-error',
				'--dbname', $node->connstr($target), $file
			],
			'pg_restore of the custom archive');
	}
	else
	{
		$node->command_ok(
			[
				'psql', '--no-psqlrc', '--set', 'ON_ERROR_STOP=1', '--quiet',
				'--dbname', $node->connstr($target), '--file', $file
			],
			'psql replay of the plain dump');
	}

	my $after = snapshot($target);
	for my $name ((map { $_->[0] } @tables), 'events_id_seq')
	{
		is($after->{$name}, $before->{$name},
			"$format: every row of $name survived");
	}

	# The restored database works: the stored delivery is still a
	# duplicate, and the next event continues after the restored ones.
	is( $node->safe_psql(
			$target, q{
		SELECT provision.handle_callback(
		         jsonb_build_object('job_id', j.id, 'status', 'running',
		                            'server_id', 4711, 'server_ip', '2001:db8::1',
		                            'tailscale_ip', '100.64.0.1'),
		         'delivery-run-dump-agent-1') ->> 'duplicate'
		  FROM provision.provisioning_jobs j
		  JOIN provision.agents a ON a.id = j.agent_id
		 WHERE a.name = 'dump-agent-1'}),
		'true',
		"$format: a restored delivery is still deduplicated");
	$node->safe_psql(
		$target, q{
		SELECT provision.handle_callback(
		         jsonb_build_object('job_id', j.id, 'status', 'running'),
		         'delivery-after-restore')
		  FROM provision.provisioning_jobs j
		  JOIN provision.agents a ON a.id = j.agent_id
		 WHERE a.name = 'dump-agent-4'});
	is( $node->safe_psql(
			$target,
			"SELECT id > $max_event, kind, from_status, to_status
			   FROM provision.events
			  WHERE id = (SELECT max(id) FROM provision.events)"),
		't|completed|provisioning|running',
		"$format: the events identity continues after the restored rows");
	is( $node->safe_psql(
			$target,
			"SELECT count(*) FROM provision.events WHERE id <= $max_event"),
		$node->safe_psql('provision', 'SELECT count(*) FROM provision.events'),
		"$format: no restored event was overwritten");
}

$node->stop;
done_testing();
