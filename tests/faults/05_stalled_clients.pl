
# 1,000 stalled or slow-drip connections while normal traffic continues:
# 500 send part of their headers and then nothing (closed by
# --idle-timeout), 500 send complete headers and then drip their body one
# byte a second, which keeps them under the idle timeout (closed by
# --request-timeout).  Meanwhile senders post callbacks one after the other:
# every one is answered 200 within a bounded time and applied exactly once.
# The listener's descriptor count rises by the stalled connections and
# returns near its baseline once they are closed; its RSS is reported.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use Errno qw(EAGAIN EWOULDBLOCK EINTR);
use IO::Select;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;
use FaultLoad;

my $stalled = 1000;
my $idle = 5;
my $request = 9;
my $n_jobs = 1500;
my $tag = 'stall';

# 1,000 client sockets need more than the usual soft limit of 1,024
# descriptors; raise this process's own limit (the listener started from it
# inherits it and raises its own to the hard limit).
my $need = $stalled + 200;
my $hard = `sh -c 'ulimit -Hn'`;
chomp $hard;
plan skip_all => "the hard RLIMIT_NOFILE ($hard) is below the $need descriptors this test needs"
  if $hard ne 'unlimited' && $hard < $need;
my $soft = $hard ne 'unlimited' && $hard < 4096 ? $hard : 4096;
system('prlimit', "--pid=$$", "--nofile=$soft:") == 0
  or die "prlimit could not raise RLIMIT_NOFILE to $soft\n";
$SIG{PIPE} = 'IGNORE';

my $node = ProvisionTest::new_node('stall');
ProvisionTest::create_listener_role($node);
my $l = ProvisionTest::start_listener(node => $node, user => 'provision_listener',
	args => [ '--pool', '4', '--idle-timeout', "${idle}s",
		'--request-timeout', "${request}s" ]);

my $jobs = FaultLoad::create_jobs($node, $tag, $n_jobs);
# Warm the pool so the baseline holds its connections.
my (undef, $warm) = ProvisionTest::new_job($node);
for (1 .. 8)
{
	$l->callback({ job_id => $warm, status => 'heartbeat' });
}
my $base = FaultLoad::proc_figures($l->pid);

my $load = FaultLoad::start_senders(2, $jobs, [$l], tag => $tag, deadline => 30,
	pace => 0.01);

my $t0 = time();
my (@headers, @drips);
for my $i (0 .. $stalled - 1)
{
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $l->port,
		Proto => 'tcp', Timeout => 5);
	unless ($s)
	{
		diag("connect $i: $!");
		last;
	}
	$s->blocking(0);
	if ($i % 2 == 0)
	{
		syswrite($s, "POST /webhooks/github HTTP/1.1\r\nHost: t\r\nContent-Type: appl");
		push @headers, { s => $s };
	}
	else
	{
		syswrite($s, "POST /webhooks/github HTTP/1.1\r\nHost: t\r\n"
			  . "Content-Type: application/json\r\nContent-Length: 200\r\n"
			  . "X-Hub-Signature-256: sha256=" . ('0' x 64) . "\r\n\r\n{");
		push @drips, { s => $s };
	}
	# Batches keep the accept backlog from overflowing.
	sleep(0.02) if $i % 100 == 99;
}
my $opened = time() - $t0;
is(@headers + @drips, $stalled, "$stalled stalled connections opened");
my $peak = { fds => 0 };
ProvisionTest::wait_until(sub {
	my $f = FaultLoad::proc_figures($l->pid);
	$peak = $f if $f->{fds} > $peak->{fds};
	$peak->{fds} >= $base->{fds} + $stalled * 0.9;
}, timeout => $idle);
cmp_ok($peak->{fds}, '>=', $base->{fds} + $stalled * 0.9,
	'the listener holds (nearly) all of them');

# Closed by the server: EOF or an error on read (a 408 or similar answer
# before the close is read and dropped).
sub server_closed
{
	my ($c) = @_;
	my $n = sysread($c->{s}, my $buf, 4096);
	return 0 if !defined $n && ($! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR);
	return !defined $n || $n == 0;
}

my $deadline = $t0 + $opened + $request + 10;
my $next_drip = time() + 1;
my $open = @headers + @drips;
while ($open > 0 && time() < $deadline)
{
	my $sel = IO::Select->new(map { $_->{s} } grep { !$_->{closed} } @headers, @drips);
	my %ready = map { ($_ => 1) } $sel->can_read(0.1);
	for my $c (grep { !$_->{closed} && $ready{ $_->{s} } } @headers, @drips)
	{
		if (server_closed($c))
		{
			$c->{closed} = time() - $t0;
			close $c->{s};
			$open--;
		}
	}
	if (time() >= $next_drip)
	{
		$next_drip += 1;
		for my $c (grep { !$_->{closed} } @drips)
		{
			my $n = syswrite($c->{s}, ' ');
			if (!defined $n && $! != EAGAIN && $! != EWOULDBLOCK)
			{
				$c->{closed} = time() - $t0;
				close $c->{s};
				$open--;
			}
		}
	}
}
my $t_all_closed = time();
my $h_open = grep { !$_->{closed} } @headers;
my $d_open = grep { !$_->{closed} } @drips;
is($h_open, 0, 'every partial-header connection was closed by the listener');
is($d_open, 0, 'every slow-drip connection was closed by the listener');
my $h_last = 0;
$h_last = ($_->{closed} // 999) > $h_last ? ($_->{closed} // 999) : $h_last for @headers;
my $d_first = 999;
my $d_last = 0;
for (@drips)
{
	my $c = $_->{closed} // 999;
	$d_first = $c if $c < $d_first;
	$d_last = $c if $c > $d_last;
}
cmp_ok($h_last, '<', $opened + $idle + 3, 'partial headers were cut off by the idle timeout');
cmp_ok($d_first, '>', $idle + 0.5, 'dripping clients outlived the idle timeout (they kept sending)');
cmp_ok($d_last, '<', $opened + $request + 3, 'and were cut off by the request timeout');
close $_->{s} for grep { !$_->{closed} } @headers, @drips;

my $after = FaultLoad::proc_figures($l->pid);
ProvisionTest::wait_until(sub {
	$after = FaultLoad::proc_figures($l->pid);
	$after->{fds} <= $base->{fds} + 5;
}, timeout => 15, interval => 0.2);
cmp_ok($after->{fds}, '<=', $base->{fds} + 5, 'the descriptor count returns near its baseline');

FaultLoad::stop_senders($load);
my $records = FaultLoad::wait_senders($load, 60);
is($load->{lost}, 0, 'every sender finished and reported');
my $fig = FaultLoad::check_accounting($node, $tag, $records, allowed => []);
my $last_sent = 0;
$last_sent = $_->{t} > $last_sent ? $_->{t} : $last_sent for @$records;
cmp_ok($last_sent, '>=', $t_all_closed, 'normal traffic kept flowing until the stalled connections were gone');
my $slowest = 0;
$slowest = $_->{max_latency} > $slowest ? $_->{max_latency} : $slowest for @$records;
cmp_ok($slowest, '<', 2, 'every normal request was answered within 2s');
ok($l->running, 'the listener is still running');

note(sprintf('stall figures: %d stalled (%d partial headers closed by %.1fs, %d drips closed %.1f-%.1fs), '
	  . 'opened in %.1fs; normal requests %d, 200s %d, slowest %.3fs',
	$stalled, scalar(@headers), $h_last, scalar(@drips), $d_first, $d_last, $opened,
	$fig->{requests}, $fig->{ok}, $slowest));
note(sprintf('listener rss_kb/fds: before %d/%d, peak %d/%d, after %d/%d',
	$base->{rss_kb}, $base->{fds}, $peak->{rss_kb}, $peak->{fds},
	$after->{rss_kb}, $after->{fds}));

done_testing();
