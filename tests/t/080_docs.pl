
# The docs as tests. Every SQL block of docs/dba-guide.md runs, in order, in
# one psql session on a fresh cluster (configured with the guide's own
# postgresql.conf lines), and every shell block of README.md and
# docs/operator-guide.md runs, in order per file, in one bash session against
# a private cluster and a listener binary on PATH. What the docs show is
# compared with what happens:
#
# - A fenced block with the info string "output" right after a code block
#   (blank lines between) is that block's expected output: psql's as it
#   prints it with VERBOSITY verbose (errors with their SQLSTATE; LOCATION
#   lines and psql's "psql:<stdin>:N:" prefixes dropped), or the shell's
#   stdout and stderr. Compared line by line after normalizing uuids,
#   timestamps and backend PIDs (a doc shows real-looking ones) and runs of
#   whitespace or of table-rule dashes (alignment follows the values); blank
#   lines do not count; a line "..." stands for any number of lines.
# - A block without an output block must run cleanly: no ERROR, WARNING or
#   FATAL from psql; for the shell, `set -e` holds (a failing command ends
#   the session, and the test names the block).
# - A block that cannot run on one machine carries, on the lines right above
#   its fence (blank lines and other HTML comments may be between), the
#   comment `<!-- not-run: reason -->`; the reason is required, and a marker
#   that precedes no block fails the test, so a marker cannot drift away
#   from its block. SQL blocks that only declare a function's signature
#   ("provision.name(...) RETURNS ...") are declarations, not statements,
#   and are skipped.
#
# Shell blocks run in a directory of the test that links every top-level
# entry of the repository (so scripts/... and examples/... resolve, and what a
# block writes stays out of the checkout), with these stand-ins for one
# machine: /etc/provision and /etc/default are directories of the test,
# host=/var/run/postgresql is the test cluster's socket, and 127.0.0.1:8080
# is a free port. The operator guide's list of GitHub secrets is also
# compared with the secrets the example workflow reads.

use strict;
use warnings;

use File::Basename qw(dirname);
use IPC::Run ();
use POSIX ();
use PostgreSQL::Test::Utils;
use Test::More;
use ProvisionTest;

my $root = ProvisionTest::repo_root();

# ---- reading a markdown file -----------------------------------------------------

# blocks($path): the fenced blocks of a markdown file, in order, as hashes:
# line (of the opening fence), info (its first word), text (de-indented),
# not_run (the marker's reason, or undef), output (the text of the output
# block that follows, or undef). Dies on a malformed marker.
sub blocks
{
	my ($path) = @_;
	my @lines = split /\n/, slurp_file($path), -1;
	my (@blocks, @problems);
	my %marker_used;
	for (my $i = 0; $i < @lines; $i++)
	{
		next unless $lines[$i] =~ /^(\s*)(`{3,})(\S*)/;
		my ($indent, $fence, $info) = (length $1, $2, $3);
		my $start = $i;
		my @body;
		for ($i++; $i < @lines && $lines[$i] !~ /^\s*\Q$fence\E\s*$/; $i++)
		{
			push @body, substr($lines[$i], $indent <= length($lines[$i]) ? $indent : 0);
		}
		push @problems, "$path:" . ($start + 1) . ": unclosed fence" if $i >= @lines;
		my %b = (line => $start + 1, info => $info, text => join("\n", @body) . "\n");

		# The comments right above the fence.
		for (my $j = $start - 1; $j >= 0; $j--)
		{
			last unless $lines[$j] =~ /^\s*$/ || $lines[$j] =~ /^\s*<!--.*-->\s*$/;
			if ($lines[$j] =~ /^\s*<!--\s*not-run:\s*(.*?)\s*-->\s*$/)
			{
				push @problems, "$path:" . ($j + 1) . ': not-run marker without a reason'
				  unless length $1;
				$b{not_run} = $1;
				$marker_used{$j} = 1;
			}
		}

		if ($info eq 'output')
		{
			my $prev = $blocks[-1];
			my $between = $prev
			  ? join('', @lines[ $prev->{end} + 1 .. $start - 1 ]) : 'x';
			if (!$prev || $between =~ /\S/ || $prev->{info} eq 'output')
			{
				push @problems, "$path:$b{line}: an output block follows no code block";
			}
			else
			{
				$prev->{output} = $b{text};
			}
		}
		$b{end} = $i;
		push @blocks, \%b;
	}
	for my $j (0 .. $#lines)
	{
		push @problems, "$path:" . ($j + 1) . ': a not-run marker that precedes no block'
		  if $lines[$j] =~ /^\s*<!--\s*not-run/ && !$marker_used{$j};
	}
	is_deeply(\@problems, [], "$path: markers and output blocks are well formed");
	return grep { $_->{info} ne 'output' } @blocks;
}

# ---- comparing output ----------------------------------------------------------------

my $uuid = qr/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;
my $timestamp = qr/\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d(?::?\d\d)?)?/;

sub normalize
{
	my ($text) = @_;
	my @out;
	for my $line (split /\n/, $text)
	{
		next if $line =~ /^LOCATION:/;
		$line =~ s/^psql:[^:]*:\d+: //;
		$line =~ s/$uuid/<uuid>/g;
		$line =~ s/$timestamp/<timestamp>/g;
		$line =~ s/\bPID \d+/PID <pid>/g;
		$line =~ s/-{2,}/--/g;
		$line =~ s/\s+/ /g;
		$line =~ s/^ | $//g;
		push @out, $line if length $line;
	}
	return @out;
}

# matches($expected, $actual): the normalized actual output has the expected
# lines, "..." standing for any lines.
sub matches
{
	my ($expected, $actual) = @_;
	my $re = join '', map { $_ eq '...' ? '(?:[^\n]*\n)*?' : quotemeta($_) . '\n' } normalize($expected);
	my $text = join '', map { "$_\n" } normalize($actual);
	return $text =~ /\A$re\z/;
}

# check($name, $block, $output): the assertion for one block.
sub check
{
	my ($name, $b, $output, $failed) = @_;
	if (defined $b->{output})
	{
		ok(matches($b->{output}, $output), "$name: prints what the doc shows")
		  or diag("expected:\n$b->{output}\ngot:\n$output");
	}
	else
	{
		ok(!$failed, "$name: runs cleanly") or diag("got:\n$output");
	}
}

# run_session(\@cmd, \@texts, %opts): feeds the texts to one interpreter,
# separated by lines that print a marker (opts{marker}->(n)), and returns
# each text's output and whether the session got past it.
sub run_session
{
	my ($cmd, $texts, %opts) = @_;
	my $tag = 'docs-test-' . int(rand(1e9));
	my $script = $opts{prologue} // '';
	for my $n (0 .. $#$texts)
	{
		$script .= $opts{marker}->("$tag $n") . "\n" . $texts->[$n];
	}
	$script .= $opts{marker}->("$tag end") . "\n" . ($opts{epilogue} // '');
	my $out = '';
	# In a process group of its own, so that nothing a block started in the
	# background outlives the session, even one that hangs.
	my $h = IPC::Run::start($cmd, '<', \$script, '>&', \$out,
		init => sub { POSIX::setpgid(0, 0) },
		IPC::Run::timeout(4 * ProvisionTest::timeout()));
	my $pid = $h->{KIDS}[0]{PID};
	eval { $h->finish; 1 } or do { diag("the session did not finish: $@"); $h->kill_kill; };
	kill 'KILL', -$pid;
	my @parts = split /^\Q$tag\E (\d+|end)\n/m, $out;
	my %by;
	shift @parts;
	while (my ($n, $text) = splice @parts, 0, 2) { $by{$n} = $text // ''; }
	return map { [ $by{$_} // '', !exists $by{ $_ + 1 } && !exists $by{end} ] } 0 .. $#$texts;
}

# ---- docs/dba-guide.md: the SQL, in one psql session ---------------------------------
{
	my $path = "$root/docs/dba-guide.md";
	my @blocks = blocks($path);
	my $conf = join '', map { $_->{text} }
	  grep { $_->{info} eq 'ini' && $_->{text} =~ /^# postgresql\.conf/ } @blocks;
	my @sql = grep {
		     $_->{info} eq 'sql'
		  && !defined $_->{not_run}
		  && !($_->{text} =~ /^\s*provision\.\w+\s*\(/ && $_->{text} =~ /\bRETURNS\b/)
	} @blocks;
	cmp_ok(scalar @sql, '>', 20, "$path: the SQL blocks to run");

	my $node = ProvisionTest::new_node('docs', extension => 0, conf => $conf);
	my @results = run_session(
		[ 'psql', '-X', '-q', '-v', 'VERBOSITY=verbose', '-h', $node->host, '-p', $node->port,
			'-d', 'provision' ],
		[ map { $_->{text} } @sql ],
		marker => sub { "\\echo $_[0]" });
	for my $i (0 .. $#sql)
	{
		my ($output, $cut) = @{ $results[$i] };
		my $failed = $cut || $output =~ /^(?:psql:[^:]*:\d+: )?(?:ERROR|WARNING|FATAL|PANIC):/m;
		check("dba-guide.md:$sql[$i]{line}", $sql[$i], $output, $failed);
	}
	$node->stop;
}

# ---- README.md and docs/operator-guide.md: the shell, one bash session each ---------------
my $node = ProvisionTest::new_node('shell');
ProvisionTest::create_listener_role($node);
my $sandbox = PostgreSQL::Test::Utils::tempdir();
my $port = PostgreSQL::Test::Cluster::get_free_port();
my @stand_ins = (
	[ qr{/etc/provision\b} => "$sandbox/etc/provision" ],
	[ qr{/etc/default/} => "$sandbox/etc/default/" ],
	[ qr{host=/var/run/postgresql\b} => 'host=' . $node->host . ' port=' . $node->port ],
	[ qr{127\.0\.0\.1:8080\b} => "127.0.0.1:$port" ]);

sub stand_in
{
	my ($text) = @_;
	$text =~ s/$_->[0]/$_->[1]/g for @stand_ins;
	return $text;
}

my $listener_dir = dirname(ProvisionTest::listener_binary());
my $workdir = "$sandbox/work";
mkdir $workdir or die "mkdir $workdir: $!";
for my $entry (glob "$root/*")
{
	symlink($entry, "$workdir/" . File::Basename::basename($entry)) or die "symlink $entry: $!";
}
for my $file ('README.md', 'docs/operator-guide.md')
{
	my @sh = grep { $_->{info} =~ /^(?:sh|bash|shell|console)$/ && !defined $_->{not_run} }
	  blocks("$root/$file");
	next unless @sh;
	for my $b (@sh)
	{
		$b->{output} = stand_in($b->{output}) if defined $b->{output};
	}
	my @results = run_session(
		[ 'bash', '--noprofile', '--norc' ],
		[ map { stand_in($_->{text}) } @sh ],
		marker => sub { "echo '$_[0]'" },
		prologue => "set -e\ncd '$workdir'\nexport PATH='$listener_dir':\"\$PATH\"\nexec 2>&1\n",
		# Whatever the blocks left running in the background stops here.
		epilogue => "kill \$(jobs -p) 2>/dev/null || true\nwait\n");
	for my $i (0 .. $#sh)
	{
		my ($output, $cut) = @{ $results[$i] };
		check("$file:$sh[$i]{line}", $sh[$i], $output, $cut);
	}
}

# ---- the GitHub secrets the quickstart sets are the ones the workflow reads ----------------
{
	my ($quickstart) = slurp_file("$root/docs/operator-guide.md") =~ /^## Production quickstart\n(.*?)^## /ms;
	my %documented = map { $_ => 1 } ($quickstart // '') =~ /gh secret set (\w+)/g;
	my $workflow = slurp_file("$root/examples/github-actions/provision.yml");
	my %read = map { $_ => 1 } grep { $_ ne 'GITHUB_TOKEN' } $workflow =~ /\bsecrets\.(\w+)/g;
	is_deeply([ sort keys %documented ], [ sort keys %read ],
		'the quickstart sets exactly the secrets the example workflow reads');
}

done_testing();
