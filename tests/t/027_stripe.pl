
# Stripe events on POST /webhooks/stripe: 404 while no Stripe secret is
# configured; the Stripe-Signature scheme (t=, any of several v1=, v0 only
# refused, the two-sided --tolerance with exactly the tolerance accepted),
# keyed with the Stripe secret's text as given; neither the callback secret
# verifies a Stripe event nor the Stripe secret a callback; the order of
# checks (route, size, content type, signature, JSON); a signed event
# enqueues a job through provision.handle_stripe_event, a replay is a
# duplicate, an unknown agent is 404 until the agent exists, an agent with
# an open job gets that job back, no agent reference is 422, a reference
# that is not a uuid 400; the log names the event id and type, never the
# body; metrics by endpoint; the secret from PROVISION_STRIPE_WEBHOOK_SECRET
# is gone from /proc/PID/environ; /readyz requires EXECUTE on
# handle_stripe_event once the route is configured.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run ();
use Time::HiRes qw(time sleep);
use ProvisionTest;

my $node = ProvisionTest::new_node('stripe');
my $max = 4096;
my $stripe_secret = ProvisionTest::random_stripe_secret();
my $rolled_secret = ProvisionTest::random_stripe_secret();
my $callback_secret = ProvisionTest::random_secret();

sub error_is
{
	my ($r, $status, $name, $error_re) = @_;
	is($r->{status}, $status, "$name: $status") or diag explain $r;
	like($r->{headers}{'content-type'} // '', qr{^application/json}i,
		"$name: Content-Type application/json");
	ok(ref $r->{json} eq 'HASH' && length($r->{json}{error} // ''), "$name: JSON body with error");
	like($r->{json}{error} // '', $error_re, "$name: error text") if $error_re;
}

sub jobs_of
{
	my ($agent) = @_;
	return ProvisionTest::query_scalar($node,
		"SELECT count(*) FROM provision.provisioning_jobs WHERE agent_id = '$agent'");
}

# --- no Stripe secret: the route does not exist ---
{
	my $l0 = ProvisionTest::start_listener(node => $node, secrets => [$callback_secret]);
	my $agent = ProvisionTest::insert_agent($node);
	my $event = ProvisionTest::stripe_event(agent => $agent);
	error_is($l0->stripe($event, secret => $stripe_secret), 404,
		'unconfigured: a signed event', qr/Stripe secret/);
	error_is($l0->get('/webhooks/stripe'), 404, 'unconfigured: GET');
	is(jobs_of($agent), 0, 'unconfigured: nothing enqueued');
	is(ProvisionTest::metric_sum($l0->metrics, 'provision_http_requests_total',
			{ endpoint => '/webhooks/stripe', code => '404' }), 2,
		'unconfigured: counted under endpoint /webhooks/stripe');
	is($l0->stop, 0, 'unconfigured listener exits 0');
}

my $l = ProvisionTest::start_listener(node => $node, secrets => [$callback_secret],
	stripe_secrets => [ $stripe_secret, $rolled_secret ], args => [ '--max-body', $max ]);

# --- a signed event enqueues a job; a replay is a duplicate ---
my $agent = ProvisionTest::insert_agent($node);
my $event = ProvisionTest::stripe_event(agent => $agent,
	metadata => { note => 'body-marker-7f3a9c' });
my $from = $l->log_size;
my $r = $l->stripe($event);
is($r->{status}, 200, 'a signed checkout.session.completed: 200') or diag explain $r;
is($r->{json}{action}, 'enqueued', 'the job is enqueued');
is($r->{json}{event_id}, $event->{id}, 'the result names the event');
ok(!$r->{json}{duplicate}, 'not a duplicate');
my $job = $r->{json}{job_id};
my $row = ProvisionTest::job_row($node, $job);
ok($row && $row->{agent_id} eq $agent && $row->{status} eq 'pending', 'a pending job for the agent');
is($row->{idempotency_key}, "stripe:$event->{id}", 'keyed by the event id');
{
	my $line = $l->wait_for_log(qr{[^\n]*path=/webhooks/stripe status=200[^\n]*}, $from) // '';
	like($line, qr/\bevent_id=\Q$event->{id}\E\b/, 'the log line names the event id');
	like($line, qr/\bevent_type=checkout\.session\.completed\b/, 'and its type');
	like($line, qr/\bjob_id=\Q$job\E\b/, 'and the job');
	unlike($l->log_content($from), qr/body-marker-7f3a9c|\Q$stripe_secret\E/,
		'the log holds neither the body nor the secret');
}

$r = $l->stripe($event);
is($r->{status}, 200, 'the same event again: 200') or diag explain $r;
ok($r->{json}{duplicate}, 'answered as a duplicate');
is($r->{json}{job_id}, $job, 'with the same job');
is(jobs_of($agent), 1, 'a replay enqueues nothing');
is(ProvisionTest::metric_sum($l->metrics, 'provision_duplicate_deliveries_total'), 1,
	'the replay counts as a duplicate');

# --- rotation: either Stripe secret verifies; several v1 ---
{
	my $a2 = ProvisionTest::insert_agent($node);
	my $e2 = ProvisionTest::stripe_event(agent => $a2);
	my $body = ProvisionTest::encode_json($e2);
	my $ts = int(time());
	is($l->stripe($body, secret => $rolled_secret)->{status}, 200,
		'the second (rolled) Stripe secret verifies');
	(my $old = ProvisionTest::sign_stripe(ProvisionTest::random_stripe_secret(), $ts, $body)) =~
	  s/^t=\d+,//;
	my $good = ProvisionTest::sign_stripe($stripe_secret, $ts, $body);
	$r = $l->stripe($body, signature => "$good,$old,v0=" . ('0' x 64));
	ok($r->{status} == 200 && $r->{json}{duplicate}, 'a header with several v1 and a v0 verifies')
	  or diag explain $r;
}

# --- the signature: 401 for each way it can be wrong ---
{
	my $a3 = ProvisionTest::insert_agent($node);
	my $e3 = ProvisionTest::stripe_event(agent => $a3);
	my $body = ProvisionTest::encode_json($e3);
	my $ts = int(time());
	my $good = ProvisionTest::sign_stripe($stripe_secret, $ts, $body);
	(my $v1 = $good) =~ s/^t=\d+,//;

	error_is($l->stripe($e3, secret => ProvisionTest::random_stripe_secret()), 401,
		'an unknown Stripe secret', qr/^header Stripe-Signature does not match the request$/);
	error_is($l->stripe($e3, secret => $callback_secret), 401,
		'the callback secret does not verify a Stripe event', qr/does not match/);
	error_is($l->stripe($body, signature => "t=$ts,v0=" . substr($v1, 3)), 401,
		'v0 only', qr/^header Stripe-Signature has no v1= signature$/);
	error_is($l->stripe($body, signature => "$v1,t=$ts"), 401, 't not first',
		qr/t= once, first/);
	error_is($l->stripe($body, signature => "t=$ts, $v1"), 401, 'a space after the comma',
		qr/without spaces/);
	error_is($l->stripe($body, signature => "t=${ts}x,$v1"), 401, 'a non-numeric t',
		qr/Unix seconds/);
	error_is($l->stripe($body, signature => $v1), 401, 'no t', qr/t= once, first/);
	error_is($l->stripe($body, signature => "t=$ts,v1=" . ('ab' x 31)), 401, 'a short v1',
		qr/64 hex digits/);
	error_is($l->stripe($body, signature => "t=$ts,$v1" . (",v0=$v1" x 20)), 401, 'oversize',
		qr/longer than 1024 bytes/);
	error_is($l->stripe($body, signature => "t=" . ($ts + 1) . ",$v1"), 401,
		'a timestamp other than the signed one', qr/does not match/);
	error_is($l->stripe($body . ' ', signature => $good), 401, 'another body', qr/does not match/);
	error_is($l->request('POST', '/webhooks/stripe', body => $body,
			headers => { 'Content-Type' => 'application/json',
				'X-Hub-Signature-256' => ProvisionTest::sign_github($stripe_secret, $body) }),
		401, 'a GitHub signature on the Stripe route', qr/^missing header Stripe-Signature$/);
	is(jobs_of($a3), 0, 'no refused event enqueued anything');

	# the Stripe secret never verifies a callback, in either scheme
	my (undef, $cjob) = ProvisionTest::new_job($node, status => 'provisioning');
	error_is($l->callback({ job_id => $cjob, status => 'heartbeat' }, secret => $stripe_secret),
		401, 'a callback signed (GitHub) with the Stripe secret');
	error_is($l->callback({ job_id => $cjob, status => 'heartbeat' }, secret => $stripe_secret,
			scheme => 'standard'),
		401, 'a callback signed (Standard Webhooks) with the Stripe secret');
	is($l->callback({ job_id => $cjob, status => 'heartbeat' })->{status}, 200,
		'while the callback secret verifies callbacks');
	my $sig = ProvisionTest::sign_stripe($stripe_secret, $ts, '{}');
	error_is($l->request('POST', '/webhooks/github', body => '{}',
			headers => { 'Content-Type' => 'application/json', 'Stripe-Signature' => $sig }),
		401, 'a Stripe signature on the callback route', qr/missing signature/);
}

# --- tolerance: exactly --tolerance (300 s) away accepted, either way ---
sub at_second_start
{
	my $frac = time() - int(time());
	sleep(1.02 - $frac) if $frac > 0.3;
	return int(time());
}
{
	my $ignored = sub { ProvisionTest::stripe_event(type => 'customer.created') };
	my $now = at_second_start();
	$r = $l->stripe($ignored->(), timestamp => $now - 300);
	ok($r->{status} == 200 && $r->{json}{action} eq 'ignored', 't exactly 300 s old accepted')
	  or diag explain $r;
	$now = at_second_start();
	error_is($l->stripe($ignored->(), timestamp => $now - 301), 401, 't 301 s old',
		qr/more than 300 seconds/);
	$now = at_second_start();
	is($l->stripe($ignored->(), timestamp => $now + 300)->{status}, 200,
		't exactly 300 s ahead accepted');
	$now = at_second_start();
	error_is($l->stripe($ignored->(), timestamp => $now + 301), 401, 't 301 s ahead',
		qr/more than 300 seconds/);
}

# --- the order of checks: route, size, content type, signature, JSON ---
{
	my $bad = { 'Stripe-Signature' => 't=1,v1=' . ('0' x 64) };
	my $big = '{' . (' ' x ($max + 10)) . '}';
	error_is($l->request('GET', '/webhooks/stripe'), 405, 'GET');
	error_is($l->request('POST', '/webhooks/stripe', body => $big,
			headers => { %$bad, 'Content-Type' => 'text/plain' }),
		413, 'size before content type and signature');
	error_is($l->request('POST', '/webhooks/stripe', body => '{}',
			headers => { %$bad, 'Content-Type' => 'text/plain' }),
		415, 'content type before signature');
	error_is($l->request('POST', '/webhooks/stripe', body => 'not json',
			headers => { %$bad, 'Content-Type' => 'application/json' }),
		401, 'signature before JSON');
	error_is($l->stripe('not json'), 400, 'a signed body that is not JSON', qr/JSON/);
	error_is($l->stripe('[1]'), 400, 'a signed JSON array', qr/object/);
	my $a4 = ProvisionTest::insert_agent($node);
	my $dup = ProvisionTest::encode_json(ProvisionTest::stripe_event(agent => $a4));
	$dup =~ s/^\{/{"type":"customer.created",/;
	error_is($l->stripe($dup), 400, 'a key repeated at the top level',
		qr/^request body repeats the key "type" at the top level$/);
	is(jobs_of($a4), 0, 'the event with a repeated key enqueued nothing');
}

# --- the status mapping of this route ---
{
	# no agent reference: 22023, answered 422 so that Stripe retries and alerts
	$r = $l->stripe(ProvisionTest::stripe_event());
	error_is($r, 422, 'no agent reference', qr/client_reference_id/);

	# a reference that is not a uuid: 22P02
	error_is($l->stripe(ProvisionTest::stripe_event(agent => 'agent-42')), 400,
		'a reference that is not a uuid');

	# an unknown agent: 404 until it exists, then the same event applies
	my $later = '7d0c8a52-1e0c-4c59-9d0f-2f0f6a3a1c77';
	my $e5 = ProvisionTest::stripe_event(agent => $later);
	error_is($l->stripe($e5), 404, 'an unknown agent');
	ProvisionTest::query_scalar($node,
		"INSERT INTO provision.agents (id, name) VALUES ('$later', 'created-late')");
	$r = $l->stripe($e5);
	ok($r->{status} == 200 && $r->{json}{action} eq 'enqueued' && !$r->{json}{duplicate},
		'the same event after the agent exists: enqueued') or diag explain $r;
	is(jobs_of($later), 1, 'one job for the late agent');

	# an agent with an open job gets that job back
	my ($a6, $open) = ProvisionTest::new_job($node, status => 'dispatched');
	$r = $l->stripe(ProvisionTest::stripe_event(agent => $a6));
	is($r->{status}, 200, 'an agent with an open job: 200') or diag explain $r;
	is($r->{json}{job_id}, $open, 'the open job is returned');
	is(jobs_of($a6), 1, 'and no second job is enqueued');

	# an unpaid session is ignored; the async success enqueues
	my $a7 = ProvisionTest::insert_agent($node);
	$r = $l->stripe(ProvisionTest::stripe_event(agent => $a7, payment_status => 'unpaid'));
	ok($r->{status} == 200 && $r->{json}{action} eq 'ignored', 'an unpaid session: ignored');
	$r = $l->stripe(ProvisionTest::stripe_event(agent => $a7,
			type => 'checkout.session.async_payment_succeeded'));
	ok($r->{status} == 200 && $r->{json}{action} eq 'enqueued', 'async_payment_succeeded: enqueued');
}

# --- the example of listener/README.md, run as printed but for its three
# settings ---
{
	my $readme = PostgreSQL::Test::Utils::slurp_file(ProvisionTest::repo_root() . '/listener/README.md');
	my ($block) = $readme =~ /<!-- stripe-example -->\s*```sh\n(.*?)```\s*<!-- \/stripe-example -->/s;
	ok($block, 'listener/README.md has the Stripe example');
	$block //= '';
	my $a9 = ProvisionTest::insert_agent($node);
	my $url = $l->url('/webhooks/stripe');
	my $file = $l->stripe_secret_file;
	ok($block =~ s/^URL=.*$/URL=$url/m && $block =~ s/^SECRET_FILE=.*$/SECRET_FILE=$file/m
		  && $block =~ s/^AGENT_ID=.*$/AGENT_ID=$a9/m, 'its three settings replaced');
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'sh', '-c', "set -e\n$block" ], '>', \$out, '2>', \$err,
		IPC::Run::timeout(ProvisionTest::timeout()));
	is($?, 0, 'the example runs') or diag $err;
	my $res = ProvisionTest::decode_json((split /\n/, $out)[0]);
	ok($res && $res->{action} eq 'enqueued' && $res->{agent_id} eq $a9 && !$res->{duplicate},
		'the example enqueues a job for the agent') or diag $out;
	is(jobs_of($a9), 1, 'one job for the agent of the example');
}

my $m = $l->metrics;
ok(ProvisionTest::metric_sum($m, 'provision_http_requests_total',
		{ endpoint => '/webhooks/stripe', code => '200' }) >= 8,
	'Stripe answers are counted under endpoint /webhooks/stripe');
is(ProvisionTest::metric_sum($m, 'provision_http_requests_total',
		{ endpoint => '/webhooks/stripe', code => '422' }), 1, 'the 422 counted');
ok(ProvisionTest::metric_sum($m, 'provision_signature_failures_total') >= 12,
	'the refused signatures counted');
unlike($l->log_content, qr/\Q$stripe_secret\E|\Q$rolled_secret\E/, 'no Stripe secret in the log');
ok($l->running, 'listener running after every case');
is($l->stop, 0, 'listener exits 0');

# --- the secret from the environment; a least-privileged role ---
{
	my $role = ProvisionTest::create_listener_role($node, 'stripe_listener');
	$node->safe_psql('provision',
		"GRANT EXECUTE ON FUNCTION provision.handle_stripe_event(jsonb) TO $role");
	my $le = ProvisionTest::start_listener(node => $node, user => $role,
		secrets => [$callback_secret], stripe_secrets => [$stripe_secret],
		stripe_secret_env => 1);
	my $a8 = ProvisionTest::insert_agent($node);
	$r = $le->stripe(ProvisionTest::stripe_event(agent => $a8));
	ok($r->{status} == 200 && $r->{json}{action} eq 'enqueued',
		'PROVISION_STRIPE_WEBHOOK_SECRET verifies, as a role granted only the two functions')
	  or diag explain $r;
	is($le->get('/readyz')->{status}, 200, '/readyz 200 with EXECUTE on both functions');
	$node->safe_psql('provision',
		"REVOKE EXECUTE ON FUNCTION provision.handle_stripe_event(jsonb) FROM $role");
	ok(ProvisionTest::wait_until(sub { $le->get('/readyz')->{status} == 503 }),
		'/readyz 503 once the role may not run handle_stripe_event');
	like($le->get('/readyz')->{json}{error} // '', qr/handle_stripe_event/,
		'and its error names the function');
	$node->safe_psql('provision',
		"GRANT EXECUTE ON FUNCTION provision.handle_stripe_event(jsonb) TO $role");
	ok(ProvisionTest::wait_until(sub { $le->get('/readyz')->{status} == 200 }),
		'/readyz 200 again after the GRANT');
	my $pid = $le->pid;
	open(my $fh, '<:raw', "/proc/$pid/environ") or die "/proc/$pid/environ: $!";
	local $/;
	my $environ = <$fh>;
	close $fh;
	unlike($environ, qr/\Q$stripe_secret\E/, 'the Stripe secret is not in /proc/PID/environ');
	unlike($environ, qr/(^|\0)PROVISION_STRIPE_WEBHOOK_SECRET=/,
		'nor its variable: the whole entry is overwritten');
	is($le->stop, 0, 'environment listener exits 0');
}

done_testing();
