
# The listener under valgrind memcheck, end to end: a handful of signed
# callbacks through both schemes and every kind of answer (applied,
# duplicate, 400, 401, 404, 405, 409, 413, 415, 500 for an error at COMMIT,
# and 503 while the database is down, then recovery), the GET endpoints, then SIGTERM.  Passes when the
# listener exits 0 and memcheck reports no error and no definitely or
# indirectly lost bytes.  Run by tests/valgrind/run.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use PostgreSQL::Test::Utils;
use Test::More;
use ProvisionTest;

# Everything is several times slower under valgrind.
$ENV{PROVISION_TEST_TIMEOUT} ||= 120;
$ENV{VALGRIND_LISTENER} = ProvisionTest::listener_binary();
# tests/valgrind/run names a directory that outlives the test, for its summary.
$ENV{VALGRIND_LOG_DIR} ||= PostgreSQL::Test::Utils::tempdir();
$ENV{PROVISION_LISTENER} =
  File::Spec->catfile(File::Spec->rel2abs(dirname(__FILE__)), 'valgrind-listener');

my $node = ProvisionTest::new_node('valgrind');
my $l = ProvisionTest::start_listener(node => $node,
	secrets => [ ProvisionTest::random_secret(whsec => 1), ProvisionTest::random_secret() ],
	args => [ '--pool', 2, '--max-body', 4096 ]);
my ($agent, $job) = ProvisionTest::new_job($node, status => 'dispatched');
my $r;

is($l->get('/healthz')->{status}, 200, 'GET /healthz');
is($l->get('/readyz')->{status},  200, 'GET /readyz');

$r = $l->callback({ job_id => $job, status => 'provisioning' }, delivery => 'vg-1');
is($r->{status}, 200, 'GitHub-signed provisioning applied');
ok($r->{json}{applied}, 'result says applied');
$r = $l->callback({ job_id => $job, status => 'provisioning' }, delivery => 'vg-1');
is($r->{status}, 200, 'same delivery again answers 200');
ok($r->{json}{duplicate}, 'and is reported as a duplicate');
$r = $l->callback({ job_id => $job, status => 'heartbeat' }, scheme => 'standard',
	secret => ($l->secrets)[1]);
is($r->{status}, 200, 'Standard Webhooks heartbeat with the second secret');
$r = $l->callback(
	{
		job_id       => $job,
		status       => 'running',
		server_id    => 48151623,
		server_ip    => '203.0.113.10',
		tailscale_ip => '100.64.0.10',
	},
	scheme => 'standard', path => '/api/webhooks/github');
is($r->{status}, 200, 'running with metadata on the original route');
is(ProvisionTest::job_row($node, $job)->{status}, 'running', 'job is running');

is($l->callback({ job_id => $job, status => 'failed' }, scheme => 'standard')->{status},
	409, 'refused transition: 409');
is($l->callback({ job_id => '00000000-0000-4000-8000-000000000000',
			status => 'provisioning' })->{status}, 404, 'unknown job: 404');
is($l->callback({ job_id => 'not-a-uuid', status => 'provisioning' })->{status},
	400, 'malformed uuid: 400');
is($l->callback('{"job_id": ')->{status}, 400, 'truncated JSON: 400');
is($l->callback('[1]')->{status}, 400, 'not an object: 400');
is($l->callback({ job_id => $job, status => 'heartbeat' },
		signature => 'sha256=' . ('0' x 64))->{status}, 401, 'wrong GitHub signature: 401');
is($l->callback({ job_id => $job, status => 'heartbeat' }, scheme => 'standard',
		timestamp => time() - 3600)->{status}, 401, 'stale timestamp: 401');
is($l->callback({ job_id => $job, status => 'heartbeat' }, scheme => 'none')->{status},
	401, 'unsigned: 401');
is($l->callback('x' x 5000)->{status}, 413, 'body over --max-body: 413');
is($l->callback({ job_id => $job, status => 'heartbeat' },
		content_type => 'text/plain')->{status}, 415, 'text/plain: 415');
is($l->get('/webhooks/github')->{status}, 405, 'GET on the callback: 405');
is($l->get('/nowhere')->{status},         404, 'unknown path: 404');
is($l->get('/metrics')->{status},         200, 'GET /metrics');

# An error raised at COMMIT, after the call's row: every result is read.
my (undef, $job2) = ProvisionTest::new_job($node, status => 'dispatched');
$node->safe_psql('provision', q{
	CREATE FUNCTION public.fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '23514'; END $$;
	CREATE CONSTRAINT TRIGGER fail_at_commit AFTER INSERT ON provision.events
		DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.fail_at_commit();
});
is($l->callback({ job_id => $job2, status => 'provisioning' })->{status}, 500,
	'error at COMMIT: 500');
$node->safe_psql('provision', 'DROP TRIGGER fail_at_commit ON provision.events');

# The database goes away and comes back: 503 meanwhile, then 200 again
# without a restart (the reconnect paths run under memcheck too).
$node->stop('fast');
$r = $l->callback({ job_id => $job, status => 'heartbeat' });
is($r->{status}, 503, 'database down: 503');
is($l->get('/readyz')->{status}, 503, 'GET /readyz while down: 503');
$node->start;
ok( ProvisionTest::wait_until(sub {
		$l->callback({ job_id => $job, status => 'heartbeat' })->{status} == 200;
	}, interval => 0.5),
	'after the restart callbacks succeed again');

is($l->stop, 0, 'SIGTERM: the listener exits 0 (99 would mean memcheck errors)');

my @reports = glob("$ENV{VALGRIND_LOG_DIR}/listener.*.log");
is(scalar @reports, 1, 'one memcheck report');
my $report = slurp_file($reports[0]);
my ($errors) = $report =~ /ERROR SUMMARY: (\d+) errors/;
my ($definite) = $report =~ /definitely lost: ([\d,]+) bytes/;
my ($indirect) = $report =~ /indirectly lost: ([\d,]+) bytes/;
is($errors, 0, 'memcheck: 0 errors');
# no leak summary at all means nothing was lost ("All heap blocks were freed")
is($definite // 0, 0, 'memcheck: 0 bytes definitely lost');
is($indirect // 0, 0, 'memcheck: 0 bytes indirectly lost');
diag($report) if ($errors // 1) || ($definite // 0) || ($indirect // 0);
note("memcheck report $reports[0]:\n" . join('', grep { /SUMMARY|lost:|reachable:|suppressed:/ } split /^/, $report));

done_testing();
