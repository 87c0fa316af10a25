
# The example GitHub Actions workflow (examples/github-actions/provision.yml)
# is valid YAML with the shape GitHub requires, is started by
# workflow_dispatch with a required job_id input, references only the inputs
# it declares and exactly the secrets its header comment lists, sends its
# callbacks through scripts/provision-callback, and reports failure from a
# step guarded by if: failure().

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use YAML::XS ();
use ProvisionTest;

my $path = ProvisionTest::repo_root() . '/examples/github-actions/provision.yml';
my $text = slurp_file($path);

my $doc = eval { YAML::XS::Load($text) };
ok($doc, 'the workflow parses as YAML') or diag($@);
is(ref $doc, 'HASH', 'its top level is a mapping');

# YAML 1.1 readers may turn the key "on" into a boolean; GitHub does not.
my $on = $doc->{on} // $doc->{1} // $doc->{true};
is(ref $on, 'HASH', 'it has an "on" mapping');
my $inputs = $on->{workflow_dispatch}{inputs};
is(ref $inputs, 'HASH', 'it is started by workflow_dispatch with inputs');
ok($inputs->{job_id}, 'job_id is an input');
ok($inputs->{job_id}{required}, 'job_id is required');
is($inputs->{job_id}{type}, 'string', 'job_id is a string');
for my $name (sort keys %$inputs)
{
	ok(defined $inputs->{$name}{description}, "input $name is described");
	ok($inputs->{$name}{required} || defined $inputs->{$name}{default},
		"input $name is required or has a default");
}

# Every ${{ ... }} expression: the inputs and secrets it names.
my (%used_inputs, %used_secrets);
while ($text =~ /\$\{\{(.*?)\}\}/gs)
{
	my $expr = $1;
	$used_inputs{$1} = 1 while $expr =~ /\binputs\.([A-Za-z_][A-Za-z0-9_-]*)/g;
	$used_secrets{$1} = 1 while $expr =~ /\bsecrets\.([A-Za-z_][A-Za-z0-9_]*)/g;
	unlike($expr, qr/\bgithub\.event\.inputs\b/,
		"'$expr' uses inputs.X rather than github.event.inputs");
}
ok($used_inputs{job_id}, 'inputs.job_id is used');
for my $name (sort keys %used_inputs)
{
	ok(exists $inputs->{$name}, "inputs.$name is a declared input");
}
for my $name (sort keys %$inputs)
{
	ok($used_inputs{$name}, "declared input $name is used");
}

# The header comment documents the repository secrets, one per line:
#   #   NAME   description
my ($header) = $text =~ /\A((?:#[^\n]*\n)+)/;
ok($header, 'the file starts with a comment block');
my ($secret_block) = ($header // '') =~ /^# Repository secrets[^\n]*\n((?:#[^\n]*\n)+)/m;
ok($secret_block, 'the header comment has a "Repository secrets" list');
my %documented;
$documented{$1} = 1 while ($secret_block // '') =~ /^#\s{2,}([A-Z][A-Z0-9_]+)\s/mg;
ok(%documented, 'the list names secrets');
is_deeply([ sort keys %used_secrets ], [ sort keys %documented ],
	'the secrets used are exactly the secrets documented');
ok($used_secrets{PROVISION_WEBHOOK_SECRET}, 'the webhook secret is a repository secret');

# Structure GitHub requires: jobs with runs-on and steps, each step exactly
# one of run or uses.
my $jobs = $doc->{jobs};
is(ref $jobs, 'HASH', 'it has jobs');
my @steps;
for my $jname (sort keys %{ $jobs // {} })
{
	my $job = $jobs->{$jname};
	ok($job->{'runs-on'}, "job $jname has runs-on");
	is(ref $job->{steps}, 'ARRAY', "job $jname has a list of steps");
	for my $step (@{ $job->{steps} // [] })
	{
		my $label = $step->{name} // '(unnamed)';
		is(scalar(grep { defined $step->{$_} } qw(run uses)), 1,
			"step '$label' has exactly one of run and uses");
		push @steps, $step;
	}
}
my %ids;
for my $step (@steps)
{
	next unless defined $step->{id};
	ok(!$ids{ $step->{id} }++, "step id $step->{id} is unique");
}
while ($text =~ /\bsteps\.([A-Za-z_][A-Za-z0-9_-]*)\./g)
{
	ok($ids{$1}, "steps.$1 names a step id");
}

# The callbacks: provisioning, heartbeat, running with the VM metadata, and
# failed under if: failure(), all through the sender.
my @runs = map { $_->{run} // '' } @steps;
my @senders = grep { /scripts\/provision-callback/ } @runs;
ok(scalar(@senders) >= 4, 'four steps or more use scripts/provision-callback');
for my $status (qw(provisioning heartbeat running failed))
{
	ok((grep { /status: "\Q$status\E"/ } @senders),
		"a step sends status $status through the sender");
}
my ($running) = grep { /status: "running"/ } @senders;
like($running // '', qr/server_id: \$server_id/,   'running carries server_id');
like($running // '', qr/server_ip: \$server_ip/,   'running carries server_ip');
like($running // '', qr/tailscale_ip: \$tailscale_ip/, 'running carries tailscale_ip');
my ($failed) = grep { ($_->{run} // '') =~ /status: "failed"/ } @steps;
is($failed && $failed->{if}, 'failure()', 'the failed report runs if: failure()');
like($failed->{run} // '', qr/error: \$error/, 'the failed report carries the error');
ok((grep { ($_->{run} // '') =~ /\bhcloud server create\b/ } @steps),
	'a step creates the server with the hcloud CLI');
ok((grep { ($_->{run} // '') =~ /\btailscale up\b/ } @steps),
	'a step joins the tailnet with tailscale up');

# The sender's options used in the workflow exist.
my $help = `sh '@{[ProvisionTest::repo_root()]}/scripts/provision-callback' --help`;
is($?, 0, 'provision-callback --help exits 0');
for my $run (@senders)
{
	while ($run =~ /scripts\/provision-callback([^\n|>]*)/g)
	{
		my $args = $1;
		while ($args =~ /(--[a-z][a-z-]+)/g)
		{
			my $flag = $1;
			like($help, qr/^\s+\Q$flag\E\b/m,
				"the workflow's $flag is a provision-callback option");
		}
	}
}

done_testing();
