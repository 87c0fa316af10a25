
# Stalled and slow clients cannot hold the listener: with 50 connections
# that sent partial headers or partial bodies and then went quiet, a normal
# request (health check and a signed callback) is still answered at once;
# the stalled connections are closed by --idle-timeout, and a client that
# drips a byte at a time is cut off by --request-timeout; stalled
# connections do not hold up a SIGTERM; --max-connections-per-ip caps the
# connections one address may hold.

use strict;
use warnings;

use IO::Select;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;

my $node = ProvisionTest::new_node('stalled');
# Few workers make a worker-per-connection design fail visibly.
my $l = ProvisionTest::start_listener(node => $node,
	args => [ '--pool', '2', '--idle-timeout', '3s', '--request-timeout', '5s' ]);
my (undef, $job) = ProvisionTest::new_job($node, status => 'provisioning');

my @stalled;
for my $i (1 .. 50)
{
	my $s = $l->connect;
	my $bytes;
	if ($i % 3 == 0)
	{
		$bytes = "POST /webhooks/github HTTP/1.1\r\nHost: t\r\nContent-Type: app";
	}
	elsif ($i % 3 == 1)
	{
		$bytes = "POST /webhooks/github HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
		  . "X-Hub-Signature-256: sha256=" . ('0' x 64) . "\r\nContent-Length: 500\r\n\r\n{\"job_id\":";
	}
	else
	{
		$bytes = "GE";
	}
	syswrite($s, $bytes);
	push @stalled, $s;
}
my $t_open = time();

my $t0 = time();
my $r = $l->get('/healthz', timeout => 5);
is($r->{status}, 200, '/healthz answered with 50 stalled connections open');
my $r2 = $l->callback({ job_id => $job, status => 'heartbeat' }, timeout => 5);
is($r2->{status}, 200, 'a signed callback answered with 50 stalled connections open');
my $elapsed = time() - $t0;
cmp_ok($elapsed, '<', 2, 'both answered promptly');
cmp_ok(time() - $t_open, '<', 3, '(measured before any idle timeout could fire)');

# Several concurrent normal clients at once, still with the stalls open.
my $results = ProvisionTest::fork_clients(4, sub {
	my $x = $l->callback({ job_id => $job, status => 'heartbeat' }, timeout => 5);
	return $x->{status};
}, timeout => 10);
is_deeply($results, [ 200, 200, 200, 200 ], 'four parallel callbacks answered meanwhile');

# The idle timeout closes every stalled connection (EOF, maybe after a 408).
my $sel = IO::Select->new(@stalled);
my %open = map { fileno($_) => $_ } @stalled;
my $deadline = time() + 15;
while (%open && time() < $deadline)
{
	for my $s ($sel->can_read(0.2))
	{
		my $n = sysread($s, my $buf, 4096);
		if (!$n)
		{
			delete $open{ fileno($s) };
			$sel->remove($s);
		}
	}
}
is(scalar keys %open, 0, 'the idle timeout closed all 50 stalled connections');
cmp_ok(time() - $t_open, '<', 13, 'within a few seconds of --idle-timeout 3s');
close $_ for @stalled;

# A slow drip keeps the idle timer happy; the request timeout ends it.
{
	my $s = $l->connect;
	my $req = "POST /webhooks/github HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
	  . ("X-Padding: " . ('a' x 200) . "\r\n") x 5;
	my $t_start = time();
	my $closed;
	for my $i (0 .. length($req) - 1)
	{
		my $n = syswrite($s, substr($req, $i, 1));
		if (!defined $n) { $closed = time(); last; }
		if (IO::Select->new($s)->can_read(0.5))
		{
			my $got = sysread($s, my $buf, 4096);
			if (!$got || $buf =~ m{^HTTP/1\.[01] 4}) { $closed = time(); last; }
		}
		last if time() - $t_start > 15;
	}
	ok(defined $closed, 'a client dripping one byte every 0.5 s is cut off');
	cmp_ok(($closed // 99) - $t_start, '<', 11, 'by --request-timeout 5s, not after the whole request');
	close $s;
}

is($l->get('/healthz')->{status}, 200, 'listener healthy afterwards');

# Stalled clients do not hold up a shutdown beyond the idle timeout.
my @late = map { my $s = $l->connect; syswrite($s, "POST /webhooks/github HTTP/1.1\r\nHo"); $s } 1 .. 5;
my $t_term = time();
is($l->stop(timeout => 20), 0, 'SIGTERM with stalled connections: exit 0');
cmp_ok(time() - $t_term, '<', 8, 'within about --idle-timeout 3s');
close $_ for @late;

# --max-connections-per-ip: one address cannot hold more connections than
# that; the next is closed at once, without an answer, and a slot freed is
# usable again.  (The 50 stalled connections above show the default: no
# limit.)
{
	my $lp = ProvisionTest::start_listener(node => $node,
		args => [ '--max-connections-per-ip', '3', '--idle-timeout', '30s' ]);
	# Each held connection is answered once, and kept alive: so it is known
	# to count.  One refused meanwhile (the start-up probe's connection may
	# not be closed on the server side yet) is simply tried again.
	my @held;
	ProvisionTest::wait_until(sub {
		my $s = $lp->connect;
		syswrite($s, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
		my $r = ProvisionTest::parse_response(ProvisionTest::Listener::read_response($s, 5));
		if ($r && $r->{status} == 200) { push @held, $s; }
		else { close $s; }
		return @held == 3;
	}, interval => 0.05);
	is(scalar @held, 3, 'three kept-alive connections from one address are served');
	my $from = $lp->log_size;
	my $extra = $lp->connect;
	syswrite($extra, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
	my $sel = IO::Select->new($extra);
	my ($got, $buf, $readable, $error) = (undef, '', 0, '');
	if ($sel->can_read(5))
	{
		$readable = 1;
		$got = sysread($extra, $buf, 4096);
		$error = "$!" unless defined $got;
	}
	# closed with the request unread, the kernel may send a reset: EOF or
	# ECONNRESET, both mean closed
	ok($readable && ((defined $got && $got == 0) || $error =~ /reset/i),
		'a fourth connection from the same address is closed')
	  or diag "read: " . ($readable ? $got // $error : 'timeout') . " <$buf>";
	is($buf, '', 'without an answer');
	close $extra;
	ok($lp->wait_for_log(qr/connection limit/, $from), 'the refusal is logged');

	close shift @held;
	my $ok = ProvisionTest::wait_until(sub { $lp->get('/healthz', timeout => 2)->{status} == 200 },
		timeout => 5);
	ok($ok, 'once one closes, a new connection from that address is served');
	my (undef, $pjob) = ProvisionTest::new_job($node, status => 'provisioning');
	is($lp->callback({ job_id => $pjob, status => 'heartbeat' })->{status}, 200,
		'and a callback goes through');
	close $_ for @held;
	is($lp->stop, 0, 'per-address limited listener exits 0');
}

done_testing();
