#!/usr/bin/perl
# The soak benchmark proper; bench/soak/run sets up its environment (see
# there). Speaks TAP for its pass/fail checks, so its verdicts read like the
# fault tests'; the figures are printed as notes.

use strict;
use warnings;

use Getopt::Long;
use POSIX ();
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;
use FaultLoad;

my %o = (minutes => 10, senders => 4, pool => 4);
GetOptions(\%o, 'minutes=f', 'senders=i', 'pool=i')
  or die "usage: bench/soak/run [--minutes N] [--senders N] [--pool N]\n";
die "--minutes, --senders and --pool must be positive\n"
  unless $o{minutes} > 0 && $o{senders} > 0 && $o{pool} > 0;

my $tag = 'soak';
my $batch = 200;

my $node = ProvisionTest::new_node('soak');
my $role = ProvisionTest::create_listener_role($node);
my $l = ProvisionTest::start_listener(node => $node, user => $role,
	args => [ '--pool', $o{pool} ]);

# Sender $i: jobs are created in batches as needed (agents named
# soak-<i>-<batch>-<n>, so the accounting can find them all by prefix).
sub sender
{
	my ($i, $dir, $deadline) = @_;
	my (@records, %other);
	my $n = 0;
	my $prev;
	my $b = 0;
	while (time() < $deadline)
	{
		my $prefix = sprintf('%s-%d-%d', $tag, $i, $b++);
		my $out = $node->safe_psql('provision', qq{
			WITH a AS (INSERT INTO provision.agents (name)
			           SELECT '$prefix-' || g FROM generate_series(1, $batch) g
			           RETURNING id)
			SELECT provision.enqueue_job(a.id) FROM a});
		for my $job (split /\n/, $out)
		{
			last if time() >= $deadline;
			my $plan = FaultLoad::plan_for($tag, $job, $n++);
			my ($p, $h, $r) = @$plan;
			my $h2 = { %$h, id => "$h->{id}2" };
			for my $d ($p, $h, $h2, $r)
			{
				my $rec = FaultLoad::deliver($l, $d, deadline => 60);
				$rec->{job} = $job;
				delete @$rec{qw(ports t max_latency elapsed)};
				push @records, $rec;
			}
			# An invalid signature: refused before any database work.
			my $x = $l->callback($r->{payload}, delivery => $r->{id},
				signature => 'sha256=' . ('0' x 64));
			$other{"bad_signature_$x->{status}"}++;
			# A redelivery of the previous job's running callback.
			if ($prev)
			{
				my $rec = FaultLoad::deliver($l, $prev, deadline => 60);
				$rec->{job} = $prev->{payload}{job_id};
				delete @$rec{qw(ports t max_latency elapsed)};
				push @records, $rec;
				$other{redeliveries}++;
			}
			$prev = $r;
		}
	}
	open(my $fh, '>', "$dir/$i.json") or die "$dir/$i.json: $!";
	print $fh ProvisionTest::encode_json({ records => \@records, other => \%other });
	close $fh or die "close: $!";
	return;
}

sub http_counts
{
	my $m = $l->metrics;
	my %c;
	for my $k (keys %$m)
	{
		next unless $k =~ /^provision_http_requests_total\{(.*)\}$/;
		my $labels = $1;
		next unless $labels =~ /endpoint="[^"]*webhooks/;
		my ($code) = $labels =~ /code="(\d+)"/;
		$c{$code} += $m->{$k};
		$c{all} += $m->{$k};
	}
	return \%c;
}

my $dir = PostgreSQL::Test::Utils::tempdir();
my $t0 = time();
my $bad_sent;
my $deadline = $t0 + 60 * $o{minutes};
my %pids;
for my $i (0 .. $o{senders} - 1)
{
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		my $ok = eval { sender($i, $dir, $deadline); 1 };
		print STDERR "sender $i died: $@" unless $ok;
		POSIX::_exit($ok ? 0 : 1);
	}
	$pids{$pid} = $i;
}

# The listener's own figures once its pool and buffers are warm.
sleep(10);
my $start = FaultLoad::proc_figures($l->pid);
my $prev = http_counts();
my $t_prev = time();
note(sprintf('start (after 10s): listener RSS %d kB, %d descriptors', $start->{rss_kb}, $start->{fds}));
my $minute = 0;
while (time() < $deadline)
{
	my $until = $t_prev + 60 < $deadline ? $t_prev + 60 : $deadline;
	sleep(0.5) while time() < $until;
	my $now = http_counts();
	my $f = FaultLoad::proc_figures($l->pid);
	my $dt = time() - $t_prev;
	my @codes = sort grep { $_ ne 'all' } keys %$now;
	note(sprintf('minute %2d: %6.1f req/s (%s); RSS %d kB, %d descriptors',
		++$minute, (($now->{all} // 0) - ($prev->{all} // 0)) / $dt,
		join(' ', map { sprintf('%s: %.1f/s', $_, (($now->{$_} // 0) - ($prev->{$_} // 0)) / $dt) } @codes),
		$f->{rss_kb}, $f->{fds}));
	($prev, $t_prev) = ($now, time());
}

my $grace = time() + 120;
while (%pids && time() < $grace)
{
	for my $pid (keys %pids)
	{
		delete $pids{$pid} if waitpid($pid, POSIX::WNOHANG()) != 0;
	}
	sleep(0.1) if %pids;
}
for my $pid (keys %pids)
{
	diag("sender $pids{$pid} did not finish; killing it");
	kill 'KILL', $pid;
	waitpid($pid, 0);
}
my $traffic_s = time() - $t0;
sleep(1);
my $end = FaultLoad::proc_figures($l->pid);

my (@records, %other);
for my $i (0 .. $o{senders} - 1)
{
	open(my $fh, '<', "$dir/$i.json") or do { diag("sender $i left no records"); next; };
	local $/;
	my $v = ProvisionTest::decode_json(<$fh>);
	push @records, @{ $v->{records} };
	$other{$_} += $v->{other}{$_} for keys %{ $v->{other} };
}
my $all = http_counts();

my $fig = FaultLoad::check_accounting($node, $tag, \@records, allowed => [503]);
$bad_sent = 0;
$bad_sent += $other{$_} for grep { /^bad_signature_/ } keys %other;
is($other{bad_signature_401} // 0, $bad_sent, 'every invalid signature was answered 401');
my $rss_growth = $end->{rss_kb} - $start->{rss_kb};
my $noise = $start->{rss_kb} * 0.1 > 2048 ? $start->{rss_kb} * 0.1 : 2048;
cmp_ok($rss_growth, '<', $noise, "listener RSS grew less than noise ($noise kB)");
cmp_ok($end->{fds}, '<=', $start->{fds} + 2, 'listener descriptors back at their start count');
is($all->{200} // 0, $fig->{ok}, 'the listener\'s 200 count equals the senders\'');

my $rows = ProvisionTest::query_scalar($node, q{
	SELECT (SELECT count(*) FROM provision.callback_deliveries) || ' deliveries, '
	    || (SELECT count(*) FROM provision.events) || ' events, '
	    || (SELECT count(*) FROM provision.agent_instances) || ' instances, '
	    || (SELECT count(*) FROM provision.provisioning_jobs WHERE status = 'running') || ' running jobs'});
note(sprintf('soak: %.1f min of traffic, %d senders, pool %d; %d HTTP requests (%.1f/s): %s',
	$traffic_s / 60, $o{senders}, $o{pool}, $all->{all}, $all->{all} / $traffic_s,
	join(' ', map { "$_: $all->{$_}" } sort grep { $_ ne 'all' } keys %$all)));
note(sprintf('soak: 200 answers %d (applied %d, duplicates %d), retries %d, invalid signatures sent %d, '
	  . 'redeliveries %d', $fig->{ok}, $fig->{applied}, $fig->{duplicates}, $fig->{retries},
	$bad_sent, $other{redeliveries} // 0));
note("soak: database rows: $rows");
note(sprintf('soak: listener RSS %d kB -> %d kB, descriptors %d -> %d',
	$start->{rss_kb}, $end->{rss_kb}, $start->{fds}, $end->{fds}));

done_testing();
