
# What the listener makes of the extension's refusals, whatever raises them:
# a run-fencing 55000 whose HINT is "workflow_run_id: N" gets N as a JSON
# number in its 409 body, and a HINT of any other form is left out; the
# delivery binding's 23505 (its message names the delivery id) is a 422
# naming the delivery id, while any other unique violation stays a 500 with
# nothing internal in the body.  A trigger on provision.events raises the
# error given in a table, so these run against any version of the extension.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use ProvisionTest;

my $node = ProvisionTest::new_node('refusals');
my $role = ProvisionTest::create_listener_role($node);
my $l = ProvisionTest::start_listener(node => $node, user => $role, args => [ '--pool', '2' ]);

$node->safe_psql('provision', q{
	CREATE TABLE public.inject (sqlstate text NOT NULL, message text NOT NULL, detail text, hint text);
	GRANT SELECT ON public.inject TO PUBLIC;
	CREATE FUNCTION public.raise_injected() RETURNS trigger LANGUAGE plpgsql AS $$
	DECLARE
		e public.inject;
	BEGIN
		SELECT * INTO e FROM public.inject;
		IF NOT FOUND THEN
			RETURN NULL;
		ELSIF e.hint IS NOT NULL THEN
			RAISE EXCEPTION USING ERRCODE = e.sqlstate, MESSAGE = e.message,
				DETAIL = coalesce(e.detail, ''), HINT = e.hint;
		ELSIF e.detail IS NOT NULL THEN
			RAISE EXCEPTION USING ERRCODE = e.sqlstate, MESSAGE = e.message, DETAIL = e.detail;
		ELSE
			RAISE EXCEPTION USING ERRCODE = e.sqlstate, MESSAGE = e.message;
		END IF;
	END $$;
	CREATE TRIGGER raise_injected AFTER INSERT ON provision.events
		FOR EACH ROW EXECUTE FUNCTION public.raise_injected();
});

my (undef, $job) = ProvisionTest::new_job($node, status => 'dispatched');

# inject($sqlstate, $message, $detail, $hint): the error the next event raises.
sub inject
{
	my ($sqlstate, $message, $detail, $hint) = @_;
	$node->safe_psql('provision',
		sprintf('TRUNCATE public.inject; INSERT INTO public.inject VALUES (%s, %s, %s, %s)',
			map { ProvisionTest::quote_literal($_) } $sqlstate, $message, $detail, $hint));
}

sub provisioning
{
	my (%opts) = @_;
	return $l->callback({ job_id => $job, status => 'provisioning', run_id => 4243 }, %opts);
}

# --- run fencing: 409 with the owner run ---
my $fence = "job $job belongs to workflow run 4242, not 4243";
inject('55000', $fence, 'current status: dispatched', 'workflow_run_id: 4242');
my $r = provisioning(delivery => 'fence-1');
is($r->{status}, 409, 'fencing: 409') or diag explain $r;
is_deeply($r->{json},
	{ error => $fence, job_id => $job, status => 'dispatched', workflow_run_id => 4242 },
	'fencing: the body names the owner run');
like($r->{content}, qr/"workflow_run_id":4242[,}]/, 'fencing: workflow_run_id is a JSON number');
ok(!ProvisionTest::delivery_row($node, 'fence-1'), 'fencing: nothing recorded');

inject('55000', $fence, 'current status: dispatched', 'workflow_run_id: 9007199254740993');
$r = provisioning();
like($r->{content}, qr/"workflow_run_id":9007199254740993[,}]/,
	'fencing: a run id past 2^53 keeps every digit');

for my $hint ('workflow_run_id: 4242, "admin": true', 'workflow_run_id: -1', 'workflow_run_id: 0',
	'workflow_run_id: 04242', 'workflow_run_id: 99999999999999999999', 'workflow_run_id:',
	'run 4242 owns the job')
{
	inject('55000', $fence, 'current status: dispatched', $hint);
	$r = provisioning();
	is($r->{status}, 409, "hint '$hint': 409");
	is_deeply($r->{json}, { error => $fence, job_id => $job, status => 'dispatched' },
		"hint '$hint': no workflow_run_id in the body");
}

inject('55000', 'refused transition from running to provisioning', 'current status: running', undef);
$r = provisioning();
is_deeply($r->{json},
	{ error => 'refused transition from running to provisioning', job_id => $job, status => 'running' },
	'a refusal without a hint: the 1.0 body');

# --- the delivery binding: 422 naming the delivery id ---
sub db_errors { return ProvisionTest::metric_sum($l->metrics, 'provision_db_errors_total') // 0; }
my $errors0 = db_errors();
inject('23505', 'delivery id "bound-1" was already used for another callback',
	'The payload differs from the one first delivered with this id.', undef);
for my $scheme ('github', 'standard')
{
	$r = provisioning(delivery => 'bound-1', scheme => $scheme);
	is($r->{status}, 422, "$scheme: delivery id bound to another callback: 422") or diag explain $r;
	is_deeply($r->{json},
		{
			error       => 'delivery id "bound-1" was already used for another callback',
			delivery_id => 'bound-1',
			detail      => 'The payload differs from the one first delivered with this id.'
		},
		"$scheme: the body names the delivery id and what differs");
	is($r->{headers}{'retry-after'}, undef, "$scheme: no Retry-After on a 422");
}

inject('23505', 'delivery id "bound-2" was already used for another callback', undef, undef);
$r = provisioning(delivery => 'bound-2');
is_deeply($r->{json},
	{ error => 'delivery id "bound-2" was already used for another callback', delivery_id => 'bound-2' },
	'422 without a detail');

is(db_errors(), $errors0, 'a 422 is the sender\'s error, not counted as a database error');

# Any other unique violation is no refusal the sender can act on.
my $from = $l->log_size;
inject('23505', 'duplicate key value violates unique constraint "dba_unique"',
	'Key (x)=(secret-value) already exists.', undef);
$r = provisioning(delivery => 'bound-3');
is($r->{status}, 500, 'another unique violation: 500');
is_deeply($r->{json}, { error => 'internal error' }, 'another unique violation: nothing internal');
like($l->log_content($from), qr/SQLSTATE 23505: duplicate key value violates unique constraint/,
	'another unique violation: the log has it');
is(db_errors(), $errors0 + 1, 'another unique violation: counted as a database error');

inject('23505', 'delivery id "other" was already used for another callback', undef, undef);
$r = provisioning(delivery => 'bound-4');
is($r->{status}, 500, 'a binding message naming another delivery id: 500');
$r = provisioning();
is($r->{status}, 500, 'a binding message without a delivery id sent: 500');

$node->safe_psql('provision', 'TRUNCATE public.inject');
$r = provisioning(delivery => 'bound-1');
is($r->{status}, 200, 'nothing injected: the callback applies');
is(ProvisionTest::job_row($node, $job)->{status}, 'provisioning', 'and the job moved');

is($l->stop, 0, 'listener exits 0');

done_testing();
