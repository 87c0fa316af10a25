
# Every error row of SPEC's response table over HTTP, and the order of the
# checks: route (404, 405) -> framing (400: more than one Content-Length, or
# Content-Length with Transfer-Encoding, or a Transfer-Encoding other than
# chunked, answered with Connection: close) ->
# size (413) -> content type (415) -> signature (401) -> JSON (400, a key
# repeated at the top level too) -> database (404 unknown job, 409).  413 is pinned both
# by Content-Length (answered before any body byte is sent) and by a chunked
# body that grows past --max-body.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use IO::Select;
use Test::More;
use Time::HiRes ();
use ProvisionTest;

my $max = 1024;
my $node = ProvisionTest::new_node('responses');
my $l = ProvisionTest::start_listener(node => $node, args => [ '--max-body', $max ]);
my $secret = ($l->secrets)[0];

# An error answer: the status, a JSON object body with a non-empty "error",
# Content-Type application/json.
sub error_is
{
	my ($r, $status, $name, $error_re) = @_;
	is($r->{status}, $status, "$name: $status") or diag explain $r;
	like($r->{headers}{'content-type'} // '', qr{^application/json}i,
		"$name: Content-Type application/json");
	ok(ref $r->{json} eq 'HASH' && length($r->{json}{error} // ''),
		"$name: JSON body with error");
	like($r->{json}{error} // '', $error_re, "$name: error text") if $error_re;
}

my ($agent, $job) = ProvisionTest::new_job($node, status => 'dispatched');

# --- 400: body not JSON, not an object, invalid field ---
error_is($l->callback('{"job_id": '), 400, 'truncated JSON', qr/json/i);
error_is($l->callback(''), 400, 'empty body');
error_is($l->callback('[1, 2]'), 400, 'JSON array', qr/object/i);
error_is($l->callback('"running"'), 400, 'JSON string', qr/object/i);
error_is($l->callback({ status => 'running' }), 400, 'job_id missing', qr/job_id/);
error_is($l->callback({ job_id => 'not-a-uuid', status => 'running' }),
	400, 'job_id not a uuid', qr/job_id|uuid/);
error_is($l->callback({ job_id => $job }), 400, 'status missing', qr/status/);
error_is($l->callback({ job_id => $job, status => 'exploded' }),
	400, 'unknown status', qr/status/);
error_is($l->callback({ job_id => $job, status => 42 }),
	400, 'status of the wrong JSON type', qr/status/);
error_is(
	$l->callback({
		job_id => $job, status => 'running', server_id => '1',
		server_ip => 'not-an-ip', tailscale_ip => '100.64.0.1' }),
	400, 'server_ip not an IP', qr/server_ip|inet/);
error_is($l->callback({ job_id => $job, status => 'running', server_id => '1' }),
	400, 'running with some but not all metadata', qr/server_ip|tailscale_ip|metadata/);
is(ProvisionTest::job_row($node, $job)->{status}, 'dispatched', '400s changed nothing');

# --- 404: unknown path, unknown job ---
error_is($l->callback({ job_id => $job, status => 'provisioning' }, path => '/webhooks/gitlab'),
	404, 'POST to an unknown path');
error_is($l->get('/'), 404, 'GET /');
error_is($l->get('/webhooks/github/extra'), 404, 'GET below the callback path');
my $nojob = '00000000-0000-4000-8000-000000000000';
error_is($l->callback({ job_id => $nojob, status => 'provisioning' }), 404, 'unknown job',
	qr/\Q$nojob\E|job/);

# --- 405 with Allow ---
for my $case ([ 'GET', '/webhooks/github', 'POST' ], [ 'PUT', '/api/webhooks/github', 'POST' ],
	[ 'POST', '/healthz', 'GET' ], [ 'DELETE', '/readyz', 'GET' ], [ 'POST', '/metrics', 'GET' ])
{
	my ($method, $path, $allowed) = @$case;
	my $r = $l->request($method, $path, body => $method eq 'GET' ? undef : '{}',
		headers => { 'Content-Type' => 'application/json' });
	error_is($r, 405, "$method $path");
	like($r->{headers}{allow} // '', qr/\b$allowed\b/, "$method $path: Allow names $allowed");
}

# --- 409 with job_id and the current status ---
my (undef, $cancelled) = ProvisionTest::new_job($node, status => 'cancelled');
my $r = $l->callback({ job_id => $cancelled, status => 'provisioning' });
error_is($r, 409, 'provisioning on a cancelled job');
is($r->{json}{job_id}, $cancelled,  '409 names the job');
is($r->{json}{status}, 'cancelled', '409 gives the current status');
my (undef, $running) = ProvisionTest::new_job($node, status => 'running');
$r = $l->callback({ job_id => $running, status => 'failed', error => 'late' }, scheme => 'standard');
error_is($r, 409, 'failed on a running job');
is($r->{json}{status}, 'running', '409 gives status running');
is(ProvisionTest::job_row($node, $running)->{status}, 'running', '409 changed nothing');
my (undef, $failed) = ProvisionTest::new_job($node, status => 'failed');
$r = $l->callback({ job_id => $failed, status => 'heartbeat' });
error_is($r, 409, 'heartbeat on a failed job');
is($r->{json}{status}, 'failed', '409 gives status failed');

# --- 415 ---
error_is($l->callback({ job_id => $job, status => 'provisioning' }, content_type => 'text/plain'),
	415, 'text/plain', qr/content-type|application\/json/i);
error_is($l->callback({ job_id => $job, status => 'provisioning' },
		content_type => 'application/x-www-form-urlencoded'), 415, 'form encoding');
error_is($l->callback({ job_id => $job, status => 'provisioning' }, content_type => 'application/jsonp'),
	415, 'application/jsonp is not application/json');
error_is($l->callback({ job_id => $job, status => 'provisioning' },
		content_type => 'application/json-seq'), 415, 'application/json-seq is not application/json');
{
	my $body = ProvisionTest::encode_json({ job_id => $job, status => 'provisioning' });
	my $sig = ProvisionTest::sign_github($secret, $body);
	my $resp = $l->raw("POST /webhooks/github HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
		  . "X-Hub-Signature-256: $sig\r\nContent-Length: " . length($body) . "\r\n\r\n$body");
	error_is($resp, 415, 'no Content-Type header');
}
$r = $l->callback({ job_id => $job, status => 'provisioning' },
	content_type => 'Application/JSON; Charset=UTF-8');
is($r->{status}, 200, 'media type and parameter names are case-insensitive') or diag explain $r;

# --- 413 by Content-Length, before any body is sent ---
for my $len ($max + 1, 10_000_000_000)
{
	my $resp = $l->raw("POST /webhooks/github HTTP/1.1\r\nHost: t\r\n"
		  . "Content-Type: application/json\r\nX-Hub-Signature-256: sha256=" . ('0' x 64) . "\r\n"
		  . "Content-Length: $len\r\n\r\n", timeout => 10);
	error_is($resp, 413, "Content-Length $len, no body sent", qr/\Q$max\E/);
	ok($resp && $resp->{elapsed} < 5, "Content-Length $len: answered without waiting for the body");
}

# Exactly --max-body is allowed (the body is padded with JSON whitespace).
{
	my $body = ProvisionTest::encode_json({ job_id => $job, status => 'heartbeat' });
	$body .= ' ' x ($max - length $body);
	is(length $body, $max, 'padded body is exactly --max-body');
	my $ok = $l->callback($body);
	is($ok->{status}, 200, 'a body of exactly --max-body is accepted') or diag explain $ok;
	error_is($l->callback("$body "), 413, 'one byte over --max-body');
}

# --- 413 while reading a chunked body ---
{
	my $chunk = '{' . (' ' x 254) . "\n";
	my $head = "POST /webhooks/github HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
	  . "X-Hub-Signature-256: sha256=" . ('0' x 64) . "\r\nTransfer-Encoding: chunked\r\n\r\n";
	my @pieces = map { sprintf("%x\r\n%s\r\n", length $chunk, $chunk) } 1 .. 8;
	push @pieces, "0\r\n\r\n";
	my $resp = $l->raw($head, then => \@pieces, delay => 0.02, timeout => 10);
	error_is($resp, 413, 'chunked body past --max-body');

	# A chunked body under the limit is read and verified as usual.
	my $body = ProvisionTest::encode_json({ job_id => $job, status => 'heartbeat' });
	my $sig = ProvisionTest::sign_github($secret, $body);
	my $half = int(length($body) / 2);
	$resp = $l->raw("POST /webhooks/github HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
		  . "Content-Type: application/json\r\nX-Hub-Signature-256: $sig\r\n"
		  . "Transfer-Encoding: chunked\r\n\r\n",
		then => [
			sprintf("%x\r\n%s\r\n", $half, substr($body, 0, $half)),
			sprintf("%x\r\n%s\r\n", length($body) - $half, substr($body, $half)),
			"0\r\n\r\n"
		]);
	is($resp && $resp->{status}, 200, 'chunked body under the limit is accepted')
	  or diag explain $resp;
}

# --- order of checks ---
{
	my $bad_sig = { 'X-Hub-Signature-256' => 'sha256=' . ('0' x 64) };
	my $big = '{' . (' ' x ($max + 10)) . '}';
	error_is($l->request('POST', '/webhooks/gitlab', body => $big,
			headers => { %$bad_sig, 'Content-Type' => 'text/plain' }),
		404, 'unknown path beats size, content type and signature');
	error_is($l->request('GET', '/webhooks/github', body => $big,
			headers => { %$bad_sig, 'Content-Type' => 'text/plain' }),
		405, 'wrong method beats size, content type and signature');
	error_is($l->request('POST', '/webhooks/github', body => $big,
			headers => { %$bad_sig, 'Content-Type' => 'text/plain' }),
		413, 'oversized body with bad content type and bad signature: 413');
	error_is($l->request('POST', '/webhooks/github', body => 'not json',
			headers => { %$bad_sig, 'Content-Type' => 'text/plain' }),
		415, 'bad content type with bad signature: 415');
	error_is($l->request('POST', '/webhooks/github', body => 'not json',
			headers => { %$bad_sig, 'Content-Type' => 'application/json' }),
		401, 'bad signature with a non-JSON body: 401');
}

# --- HTTP framing ---
{
	# The body of a refused oversized request must never be read as a
	# request of its own (it holds a complete GET here).
	my $inner = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
	my $body = $inner . ('x' x ($max + 1 - length $inner));
	my $s = $l->connect;
	syswrite($s, "POST /webhooks/github HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
		  . 'Content-Length: ' . length($body) . "\r\n\r\n");
	Time::HiRes::sleep(0.2);
	syswrite($s, $body);
	my $all = '';
	my $sel = IO::Select->new($s);
	my $deadline = Time::HiRes::time() + 3;
	while (Time::HiRes::time() < $deadline)
	{
		next unless $sel->can_read(0.1);
		my $n = sysread($s, $all, 65536, length $all);
		last unless $n;
	}
	close $s;
	# Responses follow each other's bodies directly: no line anchor.
	my @statuses = $all =~ m{HTTP/1\.[01] (\d{3}) }g;
	is_deeply(\@statuses, [413], 'the body of a 413 request is not parsed as a request');

	# Two callbacks pipelined on one keep-alive connection, answered in order.
	my @bodies = map { ProvisionTest::encode_json({ job_id => $job, status => 'heartbeat', n => $_ }) } 1, 2;
	my $req = join '', map {
		"POST /webhooks/github HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
		  . 'X-Hub-Signature-256: ' . ProvisionTest::sign_github($secret, $bodies[$_]) . "\r\n"
		  . "X-GitHub-Delivery: pipe-$_\r\n"
		  . 'Content-Length: ' . length($bodies[$_]) . "\r\n\r\n$bodies[$_]"
	} 0, 1;
	$s = $l->connect;
	syswrite($s, $req);
	$all = '';
	$sel = IO::Select->new($s);
	$deadline = Time::HiRes::time() + 5;
	while (Time::HiRes::time() < $deadline && (() = $all =~ m{HTTP/1\.1 \d{3} }g) < 2)
	{
		next unless $sel->can_read(0.1);
		my $n = sysread($s, $all, 65536, length $all);
		last unless $n;
	}
	close $s;
	@statuses = $all =~ m{HTTP/1\.[01] (\d{3}) }g;
	is_deeply(\@statuses, [ 200, 200 ], 'two pipelined callbacks are both answered 200');
}

# --- 400: ambiguous framing, refused before the body is used ---
# Every request here is correctly signed and would change the job if its
# body reached the database; the answer must be one 400 that names the
# problem and closes the connection, so that no byte after the headers is
# ever read as a request of its own.
{
	my (undef, $fjob) = ProvisionTest::new_job($node, status => 'dispatched');
	my $body = ProvisionTest::encode_json({ job_id => $fjob, status => 'provisioning' });
	my $sig = ProvisionTest::sign_github($secret, $body);
	my $len = length $body;
	my $chunked = sprintf("%x\r\n%s\r\n0\r\n\r\n", $len, $body);
	my $head = "POST /webhooks/github HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
	  . "X-Hub-Signature-256: $sig\r\n";
	my $smuggled = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";

	my @cases = (
		[ 'two equal Content-Length headers',
			"Content-Length: $len\r\nContent-Length: $len\r\n\r\n$body$smuggled",
			qr/^more than one Content-Length header$/ ],
		[ 'two different Content-Length headers',
			"Content-Length: $len\r\nContent-Length: 2\r\n\r\n$body$smuggled",
			qr/^more than one Content-Length header$/ ],
		[ 'Content-Length and chunked',
			"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n$chunked$smuggled",
			qr/^Content-Length together with Transfer-Encoding$/ ],
		[ 'chunked, then Content-Length',
			"Transfer-Encoding: chunked\r\ncontent-length: $len\r\n\r\n$chunked$smuggled",
			qr/^Content-Length together with Transfer-Encoding$/ ],
		[ 'two Transfer-Encoding headers',
			"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n$chunked$smuggled",
			qr/^more than one Transfer-Encoding header$/ ],
		# Without chunked the body has no known end; answered at once, not
		# at --request-timeout (the 5 s read below would miss that).
		[ 'Transfer-Encoding gzip',
			"Transfer-Encoding: gzip\r\n\r\n$body$smuggled",
			qr/^header Transfer-Encoding must be chunked$/ ],
		[ 'Transfer-Encoding gzip, chunked',
			"Transfer-Encoding: gzip, chunked\r\n\r\n$chunked$smuggled",
			qr/^header Transfer-Encoding must be chunked$/ ],
	);
	for my $c (@cases)
	{
		my ($name, $rest, $re) = @$c;
		my $s = $l->connect;
		syswrite($s, $head . $rest);
		my $all = '';
		my $sel = IO::Select->new($s);
		my $deadline = Time::HiRes::time() + 5;
		my $eof = 0;
		while (Time::HiRes::time() < $deadline)
		{
			next unless $sel->can_read(0.1);
			my $n = sysread($s, $all, 65536, length $all);
			if (!$n) { $eof = 1; last; }
		}
		close $s;
		my $r = ProvisionTest::parse_response($all);
		error_is($r, 400, $name, $re);
		is(lc($r->{headers}{connection} // ''), 'close', "$name: Connection: close");
		ok($eof, "$name: the server closed the connection");
		my @statuses = $all =~ m{HTTP/1\.[01] (\d{3}) }g;
		is_deeply(\@statuses, [400], "$name: one answer, nothing smuggled after the body");
	}
	is(ProvisionTest::job_row($node, $fjob)->{status}, 'dispatched',
		'no ambiguously framed request reached the database');
	my $m = $l->metrics;
	ok(ProvisionTest::metric_sum($m, 'provision_http_requests_total',
			{ endpoint => '/webhooks/github', code => '400' }) >= 7, 'the 400s are counted');

	# A probe too: its framing is as ambiguous.
	my $r = $l->raw("GET /readyz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n");
	error_is($r, 400, 'GET /readyz with two Content-Length headers', qr/Content-Length/);

	# One of each alone is fine, as before.
	my $ok = $l->raw($head . "X-GitHub-Delivery: framing-ok\r\nConnection: close\r\n"
		  . "Content-Length: $len\r\n\r\n$body");
	is($ok && $ok->{status}, 200, 'one Content-Length header is accepted') or diag explain $ok;
}

# --- 400: a key repeated at the top level of the body ---
# The listener reads the first of two equal keys (cJSON), jsonb keeps the
# last: refused, so that the two never act on different values.
{
	my (undef, $djob) = ProvisionTest::new_job($node, status => 'dispatched');
	error_is($l->callback(qq({"job_id":"$djob","status":"provisioning","status":"failed"})),
		400, 'status given twice', qr/^request body repeats the key "status" at the top level$/);
	error_is($l->callback(qq({"job_id":"$nojob","status":"heartbeat","job_id":"$djob"})),
		400, 'job_id given twice', qr/^request body repeats the key "job_id" at the top level$/);
	error_is($l->callback(qq({"job_id":"$djob","st\\u0061tus":"failed","status":"provisioning"})),
		400, 'the same key spelled with an escape',
		qr/^request body repeats the key "status" at the top level$/);
	error_is($l->callback(qq({"job_id":"$djob","status":"failed","status":"failed"}),
			scheme => 'standard'),
		400, 'a repeated key with the same value, Standard Webhooks');
	is(ProvisionTest::job_row($node, $djob)->{status}, 'dispatched',
		'no body with a repeated key reached the database');
	my $r = $l->callback(qq({"job_id":"$djob","status":"provisioning","x":{"a":1,"a":2}}));
	is($r->{status}, 200, 'a key repeated below the top level is left to the database')
	  or diag explain $r;
}

# Header names are case-insensitive; a query string does not change the route.
{
	my $body = ProvisionTest::encode_json({ job_id => $job, status => 'heartbeat' });
	my $r1 = $l->request('POST', '/webhooks/github', body => $body,
		headers => { 'CONTENT-TYPE' => 'application/json',
			'X-HUB-SIGNATURE-256' => ProvisionTest::sign_github($secret, $body) });
	is($r1->{status}, 200, 'upper-case GitHub header names') or diag explain $r1;
	my $ts = time();
	my $r2 = $l->request('POST', '/webhooks/github?source=actions', body => $body,
		headers => { 'Content-Type' => 'application/json', 'Webhook-Id' => 'case-1',
			'Webhook-Timestamp' => $ts,
			'Webhook-Signature' => ProvisionTest::sign_standard($secret, 'case-1', $ts, $body) });
	is($r2->{status}, 200, 'capitalized Standard Webhooks header names and a query string')
	  or diag explain $r2;
}

# NUL: a raw NUL byte is not JSON; \u0000 in a string cannot be stored in
# jsonb (22P05), so both are the sender's fault.
error_is($l->callback("{\"job_id\": \"$job\",\0 \"status\": \"heartbeat\"}"), 400, 'raw NUL byte in the body');
error_is($l->callback(qq({"job_id": "$job", "status": "failed", "error": "bad\\u0000byte"})),
	400, '\u0000 inside a JSON string');

is(ProvisionTest::job_row($node, $job)->{status}, 'provisioning',
	'only the accepted requests changed the job');
ok($l->running, 'listener still running after every error case');
is($l->stop, 0, 'listener exits 0');

done_testing();
