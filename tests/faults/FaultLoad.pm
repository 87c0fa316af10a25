=pod

=head1 NAME

FaultLoad - load generation and exactly-once accounting for the fault tests

=head1 SYNOPSIS

  use FindBin;
  use lib $FindBin::RealBin;
  use FaultLoad;

  my $jobs = FaultLoad::create_jobs($node, 'crash', 400);
  my $load = FaultLoad::start_senders(4, $jobs, [$l], tag => 'crash');
  ... inject the fault ...
  FaultLoad::stop_senders($load);
  my $records = FaultLoad::wait_senders($load, 120);
  my $fig = FaultLoad::check_accounting($node, 'crash', $records);

=head1 DESCRIPTION

The fault tests share one model of a sender: the provisioning workflow posts,
for each job, three signed callbacks with fixed delivery ids (C<provisioning>,
C<heartbeat>, C<running> with the VM metadata), one after the other, and
retries any answer other than 200 with the same delivery id until it gets 200
or its deadline passes.  A sender that is told to stop finishes the job it is
on, so every job it started ends with all three callbacks delivered.

Every HTTP answer is recorded; C<check_accounting> compares those records
with the database: every delivery answered 200 is recorded, every effect is
there exactly once (events per job), no job is C<running> without its
instance or the reverse, and a C<"duplicate": true> answer only follows a
lost answer.

Senders are forked processes (C<ProvisionTest::start_clients>).  They never
touch the database, never run Test::More assertions and leave with
C<POSIX::_exit>, so the test script's END blocks (cluster and listener
teardown) run only in the parent.

=cut

package FaultLoad;

use strict;
use warnings;

use Carp;
use Test::More;
use Time::HiRes qw(time sleep);

use PostgreSQL::Test::Utils ();
use ProvisionTest;

=pod

=head1 FUNCTIONS

=over

=item create_jobs($node, $tag, $n)

Creates C<$n> agents named C<< $tag-<i> >> with one C<pending> job each
(through C<provision.enqueue_job>, so each job starts with its C<enqueued>
event). Returns an array ref of job ids.

=cut

sub create_jobs
{
	my ($node, $tag, $n) = @_;
	croak "bad tag $tag" unless $tag =~ /^[a-z0-9_]+$/;
	my $out = ProvisionTest::query_scalar(
		$node, qq{
		WITH a AS (
			INSERT INTO provision.agents (name)
			SELECT '$tag-' || g FROM generate_series(1, $n) g
			RETURNING id)
		SELECT provision.enqueue_job(a.id) FROM a});
	my @jobs = split /\n/, $out;
	croak "expected $n jobs, got " . scalar(@jobs) unless @jobs == $n;
	return \@jobs;
}

=pod

=item plan_for($tag, $job, $i)

The three deliveries a workflow sends for a job, as array ref of hash refs
with C<id>, C<kind> and C<payload>.

=cut

sub plan_for
{
	my ($tag, $job, $i) = @_;
	my $octet = 1 + $i % 250;
	return [
		{
			id      => "$tag-$job-p",
			kind    => 'provisioning',
			payload => { job_id => $job, status => 'provisioning' }
		},
		{
			id      => "$tag-$job-h",
			kind    => 'heartbeat',
			payload => { job_id => $job, status => 'heartbeat' }
		},
		{
			id      => "$tag-$job-r",
			kind    => 'running',
			payload => {
				job_id       => $job,
				status       => 'running',
				server_id    => 10_000 + $i,
				server_ip    => "192.0.2.$octet",
				tailscale_ip => "100.64.0.$octet"
			}
		},
	];
}

=pod

=item deliver($listener, $delivery, %opts)

Sends one delivery until it is answered 200 or C<deadline> (seconds, default
90) passes; between attempts waits C<Retry-After> capped to C<max_backoff>
(default 0.5 s), or 0.1 s after a transport error. C<$listener> may be an
array ref of listeners, tried in turn from C<start> (the index of the first
one). C<scheme> as for C<callback> (default C<github>). Returns the record:
C<id>, C<kind>, C<codes> (every answer, 599 for a transport error),
C<at> (when each answer arrived, epoch seconds), C<ports> (the listener port
of every attempt), C<final>, C<duplicate>,
C<applied>, C<no_retry_after> (503s without C<Retry-After>), C<refused>
(599s where the connection itself failed, as opposed to an answer lost on
an open connection), C<t> (when it was first sent), C<elapsed>,
C<max_latency>.

=cut

sub deliver
{
	my ($listeners, $d, %opts) = @_;
	$listeners = [$listeners] unless ref $listeners eq 'ARRAY';
	my $t0 = time();
	my $deadline = $t0 + ($opts{deadline} // 90);
	my $k = $opts{start} // 0;
	my %rec = (id => $d->{id}, kind => $d->{kind}, codes => [], at => [], no_retry_after => 0,
		max_latency => 0, t => $t0, ports => [], refused => 0);
	while (1)
	{
		my $l = $listeners->[ $k++ % @$listeners ];
		my $t1 = time();
		my $r = $l->callback($d->{payload},
			delivery => $d->{id}, scheme => $opts{scheme} // 'github',
			timeout => $opts{timeout} // 20);
		my $t2 = time();
		my $lat = $t2 - $t1;
		$rec{max_latency} = $lat if $lat > $rec{max_latency};
		push @{ $rec{codes} }, $r->{status};
		push @{ $rec{at} }, $t2;
		push @{ $rec{ports} }, $l->port;
		if ($r->{status} == 200)
		{
			$rec{final}     = 200;
			$rec{duplicate} = ($r->{json} && $r->{json}{duplicate}) ? 1 : 0;
			$rec{applied}   = ($r->{json} && $r->{json}{applied}) ? 1 : 0;
			last;
		}
		$rec{final} = $r->{status};
		$rec{refused}++ if $r->{status} == 599 && $r->{content} =~ /Could not connect/;
		$rec{no_retry_after}++
		  if $r->{status} == 503 && !defined $r->{headers}{'retry-after'};
		last if time() >= $deadline;
		my $wait = 0.1;
		if (($r->{headers}{'retry-after'} // '') =~ /^(\d+)$/)
		{
			$wait = $1 < ($opts{max_backoff} // 0.5) ? $1 : ($opts{max_backoff} // 0.5);
			$wait = 0.05 if $wait <= 0;
		}
		sleep($wait);
	}
	$rec{elapsed} = time() - $t0;
	return \%rec;
}

=pod

=item start_senders($n, $jobs, $listeners, %opts)

Forks C<$n> senders; sender C<i> works through the jobs C<j> with
C<j % $n == i> (C<share =E<gt> 1>: every sender works through all jobs, for
the same deliveries sent by several senders). Request C<k> of sender C<i>
goes first to C<< $listeners->[(i + k) % @$listeners] >>. Each stops after
the job it is on once C<stop_senders> was called, or when its jobs run out.
C<tag> names the deliveries (required); C<scheme>, C<deadline> as for
C<deliver>; C<pace> seconds of pause after each delivery (default none). Returns a handle for C<stop_senders> and C<wait_senders>.

=cut

sub start_senders
{
	my ($n, $jobs, $listeners, %opts) = @_;
	my $tag = $opts{tag} // croak 'tag required';
	my $stop = PostgreSQL::Test::Utils::tempdir() . '/stop';
	my %index;
	@index{@$jobs} = (0 .. $#$jobs);
	my $clients = ProvisionTest::start_clients(
		$n,
		sub {
			my ($i) = @_;
			my @records;
			my $k = $i;
			my @mine = $opts{share} ? @$jobs : @$jobs[ grep { $_ % $n == $i } 0 .. $#$jobs ];
			for my $job (@mine)
			{
				last if -e $stop;
				for my $d (@{ plan_for($tag, $job, $index{$job}) })
				{
					my $rec = deliver($listeners, $d, start => $k++,
						scheme => $opts{scheme}, deadline => $opts{deadline});
					$rec->{job} = $job;
					push @records, $rec;
					sleep($opts{pace}) if $opts{pace};
				}
			}
			return \@records;
		});
	return { clients => $clients, stop => $stop, t0 => time() };
}

=pod

=item stop_senders($handle)

Tells every sender to stop after its current job.

=item wait_senders($handle, $timeout)

Waits at most C<$timeout> seconds for the senders (killing stragglers, which
fails the accounting) and returns every record of every sender as one array
ref. A sender that did not report is noted and counted in the handle's
C<lost>.

=cut

sub stop_senders
{
	my ($h) = @_;
	open(my $fh, '>', $h->{stop}) or croak "$h->{stop}: $!";
	close $fh;
	return;
}

sub wait_senders
{
	my ($h, $timeout) = @_;
	my $results = ProvisionTest::finish_clients($h->{clients}, timeout => $timeout);
	my @all;
	$h->{lost} = 0;
	for my $i (0 .. $#$results)
	{
		if (ref $results->[$i] eq 'ARRAY')
		{
			push @all, @{ $results->[$i] };
		}
		else
		{
			diag("sender $i left no records");
			$h->{lost}++;
		}
	}
	$h->{elapsed} = time() - $h->{t0};
	return \@all;
}

=pod

=item delivered_count($node, $tag)

Rows of C<provision.callback_deliveries> for the tag's deliveries, or undef
while the database does not answer (for polling during a fault).

=cut

sub delivered_count
{
	my ($node, $tag) = @_;
	my ($rc, $out) = $node->psql('provision',
		"SELECT count(*) FROM provision.callback_deliveries WHERE starts_with(delivery_id, '$tag-')");
	return $rc == 0 ? $out + 0 : undef;
}

=pod

=item wait_delivered($node, $tag, $n, $timeout)

Waits until at least C<$n> of the tag's deliveries are recorded; returns the
count reached.

=cut

sub wait_delivered
{
	my ($node, $tag, $n, $timeout) = @_;
	my $c = 0;
	ProvisionTest::wait_until(
		sub { $c = delivered_count($node, $tag) // $c; $c >= $n },
		timeout => $timeout, interval => 0.2);
	return $c;
}

=pod

=item check_accounting($node, $tag, $records, %opts)

Asserts the exactly-once accounting for the records of a run against the
database C<$node> (see DESCRIPTION). C<allowed> is an array ref of the
non-200 codes a sender may meet during this fault (default 503 and 599);
C<answers> the number of senders that send each delivery (default 1).
Returns the figures as a hash ref and notes them: C<requests>, C<deliveries>,
C<jobs>, C<ok> (200 answers), C<applied>, C<duplicates>, C<retries>,
C<codes>, C<refused>, C<rows> (delivery rows), C<events> (of the jobs sent to),
C<instances>.

=cut

sub check_accounting
{
	my ($node, $tag, $records, %opts) = @_;
	my %allowed = map { $_ => 1 } @{ $opts{allowed} // [ 503, 599 ] };
	my $answers = $opts{answers} // 1;
	my (%by_id, %jobs, %codes);
	my %fig = (requests => 0, ok => 0, applied => 0, duplicates => 0, retries => 0, refused => 0);
	my (@unfinished, @bad_code, @dup_without_loss, @double_apply);
	my $no_retry_after = 0;
	for my $r (@$records)
	{
		push @{ $by_id{ $r->{id} } }, $r;
		$jobs{ $r->{job} }{ $r->{kind} } = 1;
		$fig{requests} += @{ $r->{codes} };
		$fig{retries}  += @{ $r->{codes} } - 1;
		$codes{$_}++ for @{ $r->{codes} };
		push @bad_code, grep { $_ != 200 && !$allowed{$_} } @{ $r->{codes} };
		$no_retry_after += $r->{no_retry_after};
		$fig{refused} += $r->{refused} // 0;
		if ($r->{final} == 200)
		{
			$fig{ok}++;
			$fig{duplicates}++ if $r->{duplicate};
			$fig{applied}++ if $r->{applied} && !$r->{duplicate};
		}
		else
		{
			push @unfinished, "$r->{id}: @{ $r->{codes} }";
		}
	}
	for my $id (sort keys %by_id)
	{
		my @rs = @{ $by_id{$id} };
		my $fresh = grep { $_->{final} == 200 && !$_->{duplicate} } @rs;
		my $lost = grep { grep { $_ != 200 } @{ $_->{codes} } } @rs;
		push @double_apply, $id if $fresh > 1;
		push @dup_without_loss, $id
		  if $fresh == 0 && !$lost && @rs == $answers;
	}
	$fig{deliveries} = keys %by_id;
	$fig{jobs}       = keys %jobs;
	$fig{codes} = join(' ', map { "$_:$codes{$_}" } sort keys %codes);

	is(scalar(@unfinished), 0, "$tag: every delivery was answered 200 in the end")
	  or diag(join("\n", @unfinished[ 0 .. ($#unfinished < 9 ? $#unfinished : 9) ]));
	is(scalar(@bad_code), 0,
		"$tag: the only other answers were " . join('/', sort keys %allowed))
	  or diag("unexpected codes: @bad_code[0 .. ($#bad_code < 19 ? $#bad_code : 19)]");
	is($no_retry_after, 0, "$tag: every 503 carried Retry-After");
	is(scalar(@double_apply), 0, "$tag: no delivery was answered as applied twice")
	  or diag("@double_apply");
	is(scalar(@dup_without_loss), 0,
		"$tag: a duplicate answer only follows a lost answer")
	  or diag("@dup_without_loss");

	# Every delivery answered 200 is recorded; no delivery of the tag that
	# was never sent is recorded.
	my %rows = map { $_ => 1 } split /\n/, ProvisionTest::query_scalar($node,
		"SELECT delivery_id FROM provision.callback_deliveries WHERE starts_with(delivery_id, '$tag-')");
	$fig{rows} = keys %rows;
	my @missing = grep { !$rows{$_} } grep { grep { $_->{final} == 200 } @{ $by_id{$_} } } keys %by_id;
	is(scalar(@missing), 0, "$tag: every delivery answered 200 is in callback_deliveries")
	  or diag("missing: @missing[0 .. ($#missing < 9 ? $#missing : 9)]");
	my @extra = grep { !$by_id{$_} } keys %rows;
	is(scalar(@extra), 0, "$tag: nothing else is recorded") or diag("@extra");

	# Effects: per job, one event per state change, as many as were sent.
	my %ev;
	for my $line (split /\n/, ProvisionTest::query_scalar($node, qq{
		SELECT e.job_id, e.kind, count(*)
		FROM provision.events e
		JOIN provision.provisioning_jobs j ON j.id = e.job_id
		JOIN provision.agents a ON a.id = j.agent_id
		WHERE starts_with(a.name, '$tag-')
		GROUP BY e.job_id, e.kind}))
	{
		my ($job, $kind, $n) = split /\|/, $line;
		$ev{$job}{$kind} = $n;
		$fig{events} += $n if $jobs{$job};
	}
	my @wrong;
	for my $job (keys %jobs)
	{
		my %want = (enqueued => 1);
		$want{status}    = 1 if $jobs{$job}{provisioning};
		$want{completed} = 1 if $jobs{$job}{running};
		my %have = %{ $ev{$job} // {} };
		my $w = join(',', map { "$_=$want{$_}" } sort keys %want);
		my $h = join(',', map { "$_=$have{$_}" } sort keys %have);
		push @wrong, "$job: want $w, have $h" if $w ne $h;
	}
	is(scalar(@wrong), 0, "$tag: every job has exactly one event per state change sent")
	  or diag(join("\n", @wrong[ 0 .. ($#wrong < 9 ? $#wrong : 9) ]));

	my @running = grep { $jobs{$_}{running} } keys %jobs;
	my $not_running = ProvisionTest::query_scalar($node, qq{
		SELECT count(*) FROM provision.provisioning_jobs j
		JOIN provision.agents a ON a.id = j.agent_id
		WHERE starts_with(a.name, '$tag-')
		  AND j.id = ANY ('{@{[ join(',', @running) ]}}'::uuid[])
		  AND (j.status <> 'running' OR a.status <> 'active')});
	is($not_running, 0, "$tag: every job whose running callback was delivered is running, its agent active");

	check_consistency($node, $tag);
	$fig{instances} = ProvisionTest::query_scalar($node, qq{
		SELECT count(*) FROM provision.agent_instances i
		JOIN provision.agents a ON a.id = i.agent_id WHERE starts_with(a.name, '$tag-')});
	is($fig{instances}, scalar(@running), "$tag: one instance per running job");

	note(sprintf(
		"%s figures: jobs %d, deliveries %d, requests sent %d, 200s %d (applied %d, duplicates %d), "
		  . "retries %d, codes {%s} (599 refused at connect %d), delivery rows %d, events %d, instances %d",
		$tag, $fig{jobs}, $fig{deliveries}, $fig{requests}, $fig{ok}, $fig{applied},
		$fig{duplicates}, $fig{retries}, $fig{codes}, $fig{refused}, $fig{rows}, $fig{events} // 0,
		$fig{instances}));
	return \%fig;
}

=pod

=item check_consistency($node, $tag)

Asserts there is no partial state among the tag's agents: no job C<running>
without an instance it created, no instance without its job C<running> and a
C<completed> event for that job, no C<running> job of an agent that is not
C<active>.

=back

=cut

sub check_consistency
{
	my ($node, $tag) = @_;
	my $out = ProvisionTest::query_scalar($node, qq{
		SELECT
		  (SELECT count(*) FROM provision.provisioning_jobs j
		     JOIN provision.agents a ON a.id = j.agent_id
		    WHERE starts_with(a.name, '$tag-') AND j.status = 'running'
		      AND NOT EXISTS (SELECT 1 FROM provision.agent_instances i
		                       WHERE i.job_id = j.id AND i.agent_id = j.agent_id)),
		  (SELECT count(*) FROM provision.agent_instances i
		     JOIN provision.agents a ON a.id = i.agent_id
		    WHERE starts_with(a.name, '$tag-')
		      AND (NOT EXISTS (SELECT 1 FROM provision.provisioning_jobs j
		                        WHERE j.id = i.job_id AND j.status = 'running')
		           OR NOT EXISTS (SELECT 1 FROM provision.events e
		                           WHERE e.job_id = i.job_id AND e.kind = 'completed'))),
		  (SELECT count(*) FROM provision.provisioning_jobs j
		     JOIN provision.agents a ON a.id = j.agent_id
		    WHERE starts_with(a.name, '$tag-') AND j.status = 'running' AND a.status <> 'active')});
	my ($job_no_inst, $inst_no_job, $agent_not_active) = split /\|/, $out;
	is($job_no_inst, 0, "$tag: no job is running without its instance");
	is($inst_no_job, 0, "$tag: no instance exists without its job running and its completed event");
	is($agent_not_active, 0, "$tag: no running job belongs to an agent that is not active");
	return;
}

=pod

=head1 PROCESS FIGURES

=over

=item proc_figures($pid)

C<{ rss_kb, fds }> of a process from C</proc/$pid/status> and
C</proc/$pid/fd>.

=back

=cut

sub proc_figures
{
	my ($pid) = @_;
	my %f = (rss_kb => -1, fds => -1);
	if (open(my $fh, '<', "/proc/$pid/status"))
	{
		while (<$fh>)
		{
			$f{rss_kb} = $1 if /^VmRSS:\s+(\d+)/;
		}
	}
	if (opendir(my $dh, "/proc/$pid/fd"))
	{
		$f{fds} = grep { !/^\./ } readdir($dh);
	}
	return \%f;
}

1;
