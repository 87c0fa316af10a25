
# The request log and secret hygiene: one stderr line per request with
# method, path, status, duration, delivery id and job id; a startup line
# with the library versions; --log-format json writes one JSON object per
# line; neither a secret nor any signature value (good or bad) appears in
# stderr, in a response body, or in the process's argv.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use ProvisionTest;

my $node = ProvisionTest::new_node('logging');
my (undef, $job) = ProvisionTest::new_job($node, status => 'provisioning');

my $raw_secret = ProvisionTest::random_secret();
my $wh_secret  = ProvisionTest::random_secret(whsec => 1);
my @secret_forms = ($raw_secret, $wh_secret, substr($wh_secret, 6),
	unpack('H*', ProvisionTest::secret_key($wh_secret)));

# Collect every signature value sent and every response body received.
my (@signatures, @bodies);

sub send_all
{
	my ($l, $tag) = @_;
	my $payload = { job_id => $job, status => 'heartbeat' };
	my $body = ProvisionTest::encode_json($payload);
	my @sent;
	for my $case (
		[ "$tag-gh-ok",  scheme => 'github' ],
		[ "$tag-sw-ok",  scheme => 'standard', secret => $wh_secret ],
		[ "$tag-gh-bad", scheme => 'github', secret => ProvisionTest::random_secret() ],
		[ "$tag-sw-bad", scheme => 'standard', secret => ProvisionTest::random_secret(whsec => 1) ])
	{
		my ($delivery, %o) = @$case;
		my $h = $l->callback_headers($body, %o, delivery => $delivery);
		push @signatures, map { exists $h->{$_} ? $h->{$_} : () } 'X-Hub-Signature-256', 'webhook-signature';
		my $r = $l->request('POST', '/webhooks/github', body => $body, headers => $h);
		push @bodies, $r->{content};
		push @sent, [ $delivery, $r->{status} ];
	}
	for my $path ('/healthz', '/readyz', '/metrics', '/nowhere')
	{
		push @bodies, $l->get($path)->{content};
	}
	return \@sent;
}

sub no_secrets_in
{
	my ($what, $text) = @_;
	my @leaks = grep { index($text, $_) >= 0 } @secret_forms;
	is(scalar @leaks, 0, "no secret in $what");
	# The hex and base64 digests, without their "sha256=" / "v1," prefixes.
	my @digests = map { my $s = $_; $s =~ s/^(sha256=|v1,)//; $s } @signatures;
	@leaks = grep { length $_ >= 16 && index($text, $_) >= 0 } @digests;
	is(scalar @leaks, 0, "no signature value in $what") or diag "leaked: @leaks";
}

sub cmdline
{
	my ($pid) = @_;
	open(my $fh, '<:raw', "/proc/$pid/cmdline") or return '';
	local $/;
	my $c = <$fh> // '';
	$c =~ s/\0/ /g;
	return $c;
}

# --- text format ---
my $l = ProvisionTest::start_listener(node => $node, secrets => [ $raw_secret, $wh_secret ]);
my $startup = $l->log_content;
like($startup, qr/libpq/i,       'startup line names libpq');
like($startup, qr/microhttpd/i,  'startup line names libmicrohttpd');
like($startup, qr/openssl/i,     'startup line names OpenSSL');
like($startup, qr/cjson/i,       'startup line names cJSON');

my $from = $l->log_size;
my $sent = send_all($l, 'text');
is_deeply([ map { $_->[1] } @$sent ], [ 200, 200, 401, 401 ], 'good signatures 200, bad 401');
$l->wait_for_log(qr/text-sw-bad/, $from);
my @lines = split /\n/, $l->log_content($from);
for my $s (@$sent)
{
	my ($delivery, $status) = @$s;
	my @mine = grep { index($_, $delivery) >= 0 } @lines;
	is(scalar @mine, 1, "$delivery: exactly one log line") or diag explain \@lines;
	my $line = $mine[0] // '';
	like($line, qr/\bPOST\b/,                 "$delivery: line has the method");
	like($line, qr{/webhooks/github\b},       "$delivery: line has the path");
	like($line, qr/status\W{0,3}$status\b/i,  "$delivery: line has the status");
	like($line, qr/duration\w*[=:]\s*"?\d/i,  "$delivery: line has the duration");
	like($line, qr/\Q$job\E/, "$delivery: line has the job id") if $status == 200;
}
ok((grep { m{/nowhere} && /status\W{0,3}404\b/i } @lines), 'an unknown path is logged with 404');
ok((grep { m{/healthz} && /status\W{0,3}200\b/i } @lines), 'GET /healthz is logged');

# A request refused before its body is read is logged too.
{
	my $from413 = $l->log_size;
	my $resp = $l->raw("POST /webhooks/github HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
		  . "X-GitHub-Delivery: text-413\r\nContent-Length: 99999999\r\n\r\n", timeout => 5);
	is($resp && $resp->{status}, 413, 'oversized request refused');
	my $line = $l->wait_for_log(qr/[^\n]*status\W{0,3}413\b[^\n]*/i, $from413) // '';
	like($line, qr{POST.*/webhooks/github}, 'the 413 is logged');
	like($line, qr/text-413/, 'with its delivery id');
}

my $cmd = cmdline($l->pid);
like($cmd, qr/provision-listener/, 'argv read from /proc');
no_secrets_in('argv (--secret-file)', $cmd);
is($l->stop, 0, 'text listener exits 0');
no_secrets_in('the text log', $l->log_content);

# --- secrets from the environment, JSON log format ---
$l = ProvisionTest::start_listener(node => $node, secrets => [ $raw_secret, $wh_secret ],
	secret_env => 1, args => [ '--log-format', 'json' ]);
no_secrets_in('argv (PROVISION_WEBHOOK_SECRET)', cmdline($l->pid));
$from = $l->log_size;
$sent = send_all($l, 'json');
is_deeply([ map { $_->[1] } @$sent ], [ 200, 200, 401, 401 ],
	'secrets from the environment verify like the file');
$l->wait_for_log(qr/json-sw-bad/, $from);
is($l->stop, 0, 'json listener exits 0');

my @json_lines = grep { length } split /\n/, $l->log_content;
my @objects = map { ProvisionTest::decode_json($_) } @json_lines;
is(scalar(grep { ref $_ eq 'HASH' } @objects), scalar @json_lines,
	'every stderr line is a JSON object') or diag join("\n", @json_lines);

for my $s (@$sent)
{
	my ($delivery, $status) = @$s;
	my @mine = grep { ref $_ eq 'HASH' && grep { defined && !ref && $_ eq $delivery } values %$_ } @objects;
	is(scalar @mine, 1, "json $delivery: exactly one object") or next;
	my %v = %{ $mine[0] };
	my @values = grep { defined && !ref } values %v;
	ok((grep { $_ eq 'POST' } @values),             "json $delivery: method");
	ok((grep { $_ eq '/webhooks/github' } @values), "json $delivery: path");
	ok((grep { /^\d+$/ && $_ == $status } @values), "json $delivery: status $status");
	ok((grep { /duration/i && defined $v{$_} && $v{$_} =~ /^[0-9.eE+-]+$/ } keys %v),
		"json $delivery: numeric duration");
	ok((grep { $_ eq $job } @values), "json $delivery: job id") if $status == 200;
}
no_secrets_in('the JSON log', $l->log_content);
no_secrets_in('the response bodies', join("\n", @bodies));

done_testing();
