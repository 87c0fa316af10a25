
# Signature verification over HTTP: 401 for a missing, malformed or wrong
# signature in either scheme and for a webhook-timestamp outside the
# tolerance (both edges: exactly --tolerance away is accepted, one second
# more is refused); rotation (a secret file with two secrets); a whsec_
# secret keys both schemes with its decoded bytes; --schemes and
# PROVISION_SCHEMES accept only the schemes they list (401 naming them), and
# the scheme chosen names the delivery id header; the published GitHub and
# Standard Webhooks vector keys pass verification end to end.

use strict;
use warnings;

use MIME::Base64 qw(encode_base64);
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;

my $node = ProvisionTest::new_node('signatures');
my $raw_secret = ProvisionTest::random_secret();
my $wh_secret  = ProvisionTest::random_secret(whsec => 1);
my $l = ProvisionTest::start_listener(node => $node,
	secrets => [ $raw_secret, $wh_secret ]);

my (undef, $job) = ProvisionTest::new_job($node, status => 'provisioning');
my $payload = { job_id => $job, status => 'heartbeat' };
my $body = ProvisionTest::encode_json($payload);

sub accepted
{
	my ($r, $name) = @_;
	is($r->{status}, 200, $name) or diag explain $r;
}

sub refused
{
	my ($r, $name, $header_re) = @_;
	is($r->{status}, 401, "$name: 401") or diag explain $r;
	ok(defined $r->{json} && ref $r->{json} eq 'HASH' && length($r->{json}{error} // ''),
		"$name: JSON body with error");
	like($r->{json}{error} // '', $header_re, "$name: error names the header")
	  if $header_re;
}

# --- GitHub scheme ---
accepted($l->callback($payload), 'GitHub: first secret verifies');
accepted($l->callback($payload, secret => $wh_secret), 'GitHub: second (whsec_) secret verifies');
refused($l->callback($payload, scheme => 'none'), 'no signature header at all', qr/signature/i);
refused($l->callback($payload, secret => ProvisionTest::random_secret()),
	'GitHub: unknown secret', qr/x-hub-signature-256/i);
refused($l->callback($payload, signature => ProvisionTest::sign_github($raw_secret, "$body ")),
	'GitHub: signature of another body');
refused($l->callback($payload, signature => 'sha256=' . ('0' x 64)), 'GitHub: all-zero digest');
refused($l->callback($payload, signature => substr(ProvisionTest::sign_github($raw_secret, $body), 0, -2)),
	'GitHub: truncated digest');
refused($l->callback($payload, signature => ProvisionTest::sign_github($raw_secret, $body) . '00'),
	'GitHub: overlong digest');
refused($l->callback($payload, signature => substr(ProvisionTest::sign_github($raw_secret, $body), 7)),
	'GitHub: digest without sha256= prefix');
(my $sha1 = ProvisionTest::sign_github($raw_secret, $body)) =~ s/^sha256=/sha1=/;
refused($l->callback($payload, signature => $sha1), 'GitHub: sha1= prefix');
refused($l->callback($payload, signature => 'sha256=' . ('zz' x 32)), 'GitHub: non-hex digest');
refused($l->callback($payload, signature => ''), 'GitHub: empty header');
# The whsec_ text itself is not the key: the decoded bytes are.
refused($l->callback($payload, signature => 'sha256=' . Digest::SHA::hmac_sha256_hex($body, $wh_secret)),
	'GitHub: HMAC keyed with the undecoded whsec_ text');

# --- Standard Webhooks scheme ---
accepted($l->callback($payload, scheme => 'standard'), 'Standard: raw secret verifies');
accepted($l->callback($payload, scheme => 'standard', secret => $wh_secret),
	'Standard: whsec_ secret verifies');
my $id = 'msg_sig_1';
my $ts = int(time());
my $good = ProvisionTest::sign_standard($wh_secret, $id, $ts, $body);
my $bad  = ProvisionTest::sign_standard(ProvisionTest::random_secret(whsec => 1), $id, $ts, $body);
(my $v2 = $good) =~ s/^v1,/v2,/;
accepted($l->callback($payload, scheme => 'standard', delivery => $id, timestamp => $ts,
		signature => "$bad $good"), 'Standard: second of two v1 entries matches');
accepted($l->callback($payload, scheme => 'standard', delivery => $id, timestamp => $ts,
		signature => "$v2 $good"), 'Standard: other versions ignored, v1 matches');
refused($l->callback($payload, scheme => 'standard', delivery => $id, timestamp => $ts,
		signature => $v2), 'Standard: only a v2 entry');
refused($l->callback($payload, scheme => 'standard', delivery => $id, timestamp => $ts,
		signature => $bad), 'Standard: unknown secret', qr/webhook-signature/i);
refused($l->callback($payload, scheme => 'standard', delivery => 'msg_other', timestamp => $ts,
		signature => $good), 'Standard: signature made for another webhook-id');
refused($l->callback($payload, scheme => 'standard', delivery => $id, timestamp => $ts + 1,
		signature => $good), 'Standard: signature made for another timestamp');
refused($l->callback($payload, scheme => 'standard', delivery => $id, timestamp => $ts,
		signature => 'v1,' . encode_base64('x' x 32, '')), 'Standard: wrong digest');
refused($l->callback($payload, scheme => 'standard', delivery => $id, timestamp => $ts,
		signature => 'v1,!!!notbase64!!!'), 'Standard: digest not base64');
refused($l->callback($payload, scheme => 'standard', delivery => $id, timestamp => 'yesterday',
		signature => $good), 'Standard: timestamp not a number', qr/webhook-timestamp/i);

# Missing webhook-id / webhook-timestamp next to a signature.
for my $missing ('webhook-id', 'webhook-timestamp')
{
	my $h = $l->callback_headers($body, scheme => 'standard', secret => $wh_secret);
	delete $h->{$missing};
	refused($l->request('POST', '/webhooks/github', body => $body, headers => $h),
		"Standard: $missing missing", qr/\Q$missing\E/i);
}

# --- tolerance (default 300 s) ---
# Start each edge case just after a second boundary so that the request
# reaches the listener within the same wall-clock second it was signed in.
sub at_second_start
{
	my $frac = time() - int(time());
	sleep(1.02 - $frac) if $frac > 0.3;
	return int(time());
}

my $now = at_second_start();
accepted($l->callback($payload, scheme => 'standard', timestamp => $now - 300),
	'timestamp exactly 300 s in the past is accepted');
$now = at_second_start();
refused($l->callback($payload, scheme => 'standard', timestamp => $now - 301),
	'timestamp 301 s in the past is refused', qr/webhook-timestamp/i);
$now = at_second_start();
accepted($l->callback($payload, scheme => 'standard', timestamp => $now + 300),
	'timestamp exactly 300 s in the future is accepted');
$now = at_second_start();
refused($l->callback($payload, scheme => 'standard', timestamp => $now + 301),
	'timestamp 301 s in the future is refused', qr/webhook-timestamp/i);
refused($l->callback($payload, scheme => 'standard', timestamp => 0),
	'timestamp 0 is refused');
$now = int(time());
refused($l->callback($payload, scheme => 'standard', timestamp => "$now.5"),
	'fractional timestamp is refused', qr/webhook-timestamp/i);
refused($l->callback($payload, scheme => 'standard', timestamp => "${now}abc"),
	'timestamp with trailing junk is refused', qr/webhook-timestamp/i);
refused($l->callback($payload, scheme => 'standard', timestamp => '99999999999999999999999'),
	'timestamp beyond 64 bits is refused', qr/webhook-timestamp/i);

# No accepted request did anything but heartbeats.
is(ProvisionTest::job_row($node, $job)->{status}, 'provisioning',
	'refused requests changed nothing');
is($l->stop, 0, 'listener exits 0');

# --- --tolerance flag; rotation does not admit a third secret ---
my $l2 = ProvisionTest::start_listener(node => $node,
	secrets => [$raw_secret], args => [ '--tolerance', '10' ]);
$now = at_second_start();
accepted($l2->callback($payload, scheme => 'standard', timestamp => $now - 10),
	'--tolerance 10: 10 s old accepted');
$now = at_second_start();
refused($l2->callback($payload, scheme => 'standard', timestamp => $now - 11),
	'--tolerance 10: 11 s old refused');
refused($l2->callback($payload, secret => $wh_secret),
	'a secret not in this listener\'s file is refused');
is($l2->stop, 0, 'second listener exits 0');

# --- a secret file edited on Windows: CRLF line ends, a blank line ---
{
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $file = "$dir/secret-crlf";
	open(my $fh, '>', $file) or die "$file: $!";
	print $fh "$raw_secret\r\n\r\n$wh_secret\r\n";
	close $fh;
	chmod 0600, $file;
	my $lc = ProvisionTest::start_listener(node => $node, secret_file => $file,
		secrets => [ $raw_secret, $wh_secret ]);
	accepted($lc->callback($payload), 'CRLF secret file: first secret verifies');
	accepted($lc->callback($payload, scheme => 'standard', secret => $wh_secret),
		'CRLF secret file: whsec_ secret after a blank line verifies');
	refused($lc->callback($payload, secret => "$raw_secret\r"), 'CRLF secret file: the CR is not part of the key');
	is($lc->stop, 0, 'CRLF listener exits 0');
}

# --- --schemes: only the listed schemes verify; the 401 names them ---
{
	my $ls = ProvisionTest::start_listener(node => $node, secrets => [$raw_secret],
		args => [ '--schemes', 'standard' ]);
	like($ls->log_content, qr/signature schemes accepted: standard\b(?!,)/,
		'--schemes standard: the start-up log names the accepted scheme');
	accepted($ls->callback($payload, scheme => 'standard'), '--schemes standard: standard verifies');
	my $r = $ls->callback($payload, delivery => 'gh-refused-1');
	refused($r, '--schemes standard: a correct GitHub signature is refused',
		qr/^signature scheme github \(X-Hub-Signature-256\) is not accepted here; accepted: standard \(webhook-id, webhook-timestamp, webhook-signature\)$/);
	refused($ls->callback($payload, scheme => 'none'),
		'--schemes standard: no signature names only standard',
		qr/^missing signature: send standard \(webhook-id, webhook-timestamp, webhook-signature\)$/);
	accepted($ls->callback($payload, scheme => 'both'),
		'--schemes standard: a request signed both ways verifies with standard');
	my $h = $ls->callback_headers($body, scheme => 'both');
	$h->{'webhook-signature'} = 'v1,' . encode_base64('x' x 32, '');
	refused($ls->request('POST', '/webhooks/github', body => $body, headers => $h),
		'--schemes standard: a bad standard signature is not rescued by a good GitHub one',
		qr/webhook-signature/);
	is(ProvisionTest::metric_sum($ls->metrics, 'provision_signature_failures_total'), 3,
		'--schemes standard: the refusals count as signature failures');
	is($ls->stop, 0, '--schemes standard listener exits 0');

	my $lg = ProvisionTest::start_listener(node => $node, secrets => [$raw_secret],
		env => { PROVISION_SCHEMES => 'github' });
	accepted($lg->callback($payload), 'PROVISION_SCHEMES=github: github verifies');
	refused($lg->callback($payload, scheme => 'standard'),
		'PROVISION_SCHEMES=github: a correct standard signature is refused',
		qr/^signature scheme standard \(webhook-signature\) is not accepted here; accepted: github \(X-Hub-Signature-256\)$/);

	# Signed both ways, the GitHub signature is the one verified, so the
	# delivery id is X-GitHub-Delivery, not webhook-id.
	my ($ag, $jg) = ProvisionTest::new_job($node, status => 'provisioning');
	my $bg = ProvisionTest::encode_json({ job_id => $jg, status => 'heartbeat' });
	my $hb = $lg->callback_headers($bg, scheme => 'both', delivery => 'both-1');
	$hb->{'X-GitHub-Delivery'} = 'gh-delivery-both-1';
	$hb->{'webhook-signature'} = 'v1,' . encode_base64('x' x 32, '');
	accepted($lg->request('POST', '/webhooks/github', body => $bg, headers => $hb),
		'PROVISION_SCHEMES=github: a bad webhook-signature is ignored, GitHub verifies');
	is(ProvisionTest::query_scalar($node,
			"SELECT delivery_id FROM provision.callback_deliveries WHERE job_id = '$jg'"),
		'gh-delivery-both-1', 'PROVISION_SCHEMES=github: the delivery id is X-GitHub-Delivery');
	is($lg->stop, 0, 'PROVISION_SCHEMES=github listener exits 0');

	my $lb = ProvisionTest::start_listener(node => $node, secrets => [$raw_secret],
		env => { PROVISION_SCHEMES => 'github' }, args => [ '--schemes', 'github, standard' ]);
	accepted($lb->callback($payload, scheme => 'standard'),
		'--schemes "github, standard" wins over PROVISION_SCHEMES=github');
	accepted($lb->callback($payload), '--schemes "github, standard": github verifies too');
	is($lb->stop, 0, 'listener with both schemes exits 0');
}

# --- published vectors, end to end ---
# A correct signature lets the request through to JSON parsing, so a
# non-callback body answers 400 (not 401).
my $l3 = ProvisionTest::start_listener(node => $node,
	secrets => ["It's a Secret to Everybody"]);
my $r = $l3->request('POST', '/webhooks/github', body => 'Hello, World!',
	headers => {
		'Content-Type' => 'application/json',
		'X-Hub-Signature-256' =>
		  'sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17'
	});
is($r->{status}, 400, 'GitHub published vector verifies (then 400: not JSON)') or diag explain $r;
is($l3->stop, 0, 'vector listener exits 0');

# The Standard Webhooks vector's key and message id, signed at the current
# time (the vector's own timestamp is years outside any tolerance).
my $vector_key = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
my $l4 = ProvisionTest::start_listener(node => $node, secrets => [$vector_key]);
$r = $l4->callback('{"test": 2432232314}', scheme => 'standard',
	delivery => 'msg_p5jXN8AQM9LWM0D4loKWxJek');
is($r->{status}, 400, 'Standard Webhooks vector key verifies (then 400: no job_id)')
  or diag explain $r;
like($r->{json}{error} // '', qr/job_id/, '400 names job_id');
is($l4->stop, 0, 'vector listener exits 0');

done_testing();
