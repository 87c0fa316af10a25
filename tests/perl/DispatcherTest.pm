=pod

=head1 NAME

DispatcherTest - harness for the dispatcher's end-to-end TAP tests

=head1 SYNOPSIS

  use ProvisionTest;
  use DispatcherTest;

  my $node = ProvisionTest::new_node('main');
  my $gh = FakeGitHub->new(tokens => [$DispatcherTest::TOKEN]);
  my $d = DispatcherTest::start_dispatcher(node => $node, github => $gh);
  my ($agent, $job) = ProvisionTest::new_job($node);
  DispatcherTest::wait_for_run($node, $job);
  is($d->stop, 0, 'exits 0 on SIGTERM');

=head1 DESCRIPTION

Starts the real C<provision-dispatcher> against a node and a L<FakeGitHub>,
as a least-privileged role (L</create_dispatcher_role>), with a token in
C<PROVISION_GITHUB_TOKEN> unless told otherwise, a short C<--poll>, and its
stderr in C<tmp_check/log/E<lt>testE<gt>_dispatcher_N.log>. The returned
object has the methods of C<ProvisionTest::Listener> (C<log_content>,
C<wait_for_log>, C<running>, C<stop>, C<signal>, C<wait_exit>, C<get>,
C<metrics> when C<metrics> was asked for) plus C<log_lines> (the JSON log
lines, with C<< log_format => 'json' >>).

The binary is C<PROVISION_DISPATCHER>, else
C<< <repo>/dispatcher/provision-dispatcher >>.

=cut

package DispatcherTest;

use strict;
use warnings;

use Carp;
use File::Basename ();
use File::Spec;
use HTTP::Tiny;
use POSIX ();
use Time::HiRes qw(time sleep);

use FakeGitHub;
use ProvisionTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils ();

our $TOKEN = 'ghp_ProvisionTest0123456789abcdefABCDEF';

my @running;
my $seq = 0;
my $parent_pid = $$;

sub binary
{
	return $ENV{PROVISION_DISPATCHER}
	  || File::Spec->catfile(ProvisionTest::repo_root(), 'dispatcher', 'provision-dispatcher');
}

=pod

=head1 FUNCTIONS

=over

=item create_dispatcher_role($node, $role)

Creates login role C<$role> (default C<provision_dispatcher>) with what the
operator guide grants the dispatcher and nothing more: C<USAGE> on the
schema, C<EXECUTE> on C<claim_jobs>, C<update_job_status>,
C<record_dispatch> and C<retry_failed_jobs>, and C<SELECT> on the columns
of C<provisioning_jobs> that reconciliation reads. Idempotent.

=cut

sub create_dispatcher_role
{
	my ($node, $role) = @_;
	$role //= 'provision_dispatcher';
	croak "bad role name $role" unless $role =~ /^[a-z_][a-z0-9_]*$/;
	$node->safe_psql(
		'provision', qq{
		DO \$\$ BEGIN
			IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') THEN
				CREATE ROLE $role LOGIN;
			END IF;
		END \$\$;
		GRANT USAGE ON SCHEMA provision TO $role;
		GRANT EXECUTE ON FUNCTION provision.claim_jobs(integer),
			provision.update_job_status(uuid, provision.job_status, text),
			provision.record_dispatch(uuid, bigint, text),
			provision.retry_failed_jobs(integer) TO $role;
		GRANT SELECT (id, agent_id, status, workflow_run_id, dispatched_at)
			ON provision.provisioning_jobs TO $role;
	});
	return $role;
}

=pod

=item app_key()

A fresh 2048-bit RSA key pair made with openssl: C<(private key file,
public key PEM text)>.

=cut

sub app_key
{
	my $dir = PostgreSQL::Test::Utils::tempdir();
	system("openssl genrsa -traditional -out $dir/app.pem 2048 >/dev/null 2>&1") == 0
	  or croak "openssl genrsa failed";
	chmod 0600, "$dir/app.pem";
	my $pub = `openssl rsa -in $dir/app.pem -pubout 2>/dev/null`;
	croak "openssl rsa -pubout failed" unless $pub =~ /BEGIN PUBLIC KEY/;
	return ("$dir/app.pem", $pub);
}

=pod

=item write_file($content)

Writes C<$content> to a new file (mode 0600) and returns its path.

=cut

sub write_file
{
	my ($content) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $path = "$dir/file";
	open(my $fh, '>', $path) or croak "$path: $!";
	print $fh $content;
	close $fh or croak "$path: $!";
	chmod 0600, $path;
	return $path;
}

=pod

=item start_dispatcher(%opts)

Options: C<node> (required unless C<database>), C<github> (a FakeGitHub;
its URL becomes C<--api> and its CA C<--ca-file> when it serves TLS),
C<user> (default: L</create_dispatcher_role>), C<database> (a conninfo
instead), C<token> (default C<$TOKEN>, passed in C<PROVISION_GITHUB_TOKEN>;
undef for none), C<token_file> (pass the token in a file instead), C<app>
(hash ref C<id>, C<installation>, C<key_file>: App authentication),
C<poll> (default C<1>), C<metrics> (serve C<--metrics-listen> on a free
port), C<args>, C<env>, C<wait> (0: do not wait for the start line).

=cut

sub start_dispatcher
{
	my (%opts) = @_;
	my $bin = binary();
	croak "dispatcher binary $bin is not executable" unless -x $bin;
	my $gh = $opts{github};
	my %env = %{ $opts{env} // {} };
	my @args;

	my $db = $opts{database};
	if (!defined $db)
	{
		my $user = $opts{user} // create_dispatcher_role($opts{node});
		$db = ProvisionTest::conninfo($opts{node}, user => $user);
	}
	push @args, '--database', $db;
	push @args, '--repo', $opts{repo} // 'acme/agents';
	push @args, '--poll', $opts{poll} // '1';
	if ($gh)
	{
		push @args, '--api', $gh->url;
		push @args, '--ca-file', $gh->ca_file if $gh->ca_file && !$opts{no_ca_file};
	}
	if ($opts{app})
	{
		push @args, '--app-id', $opts{app}{id}, '--app-key-file', $opts{app}{key_file},
		  '--installation-id', $opts{app}{installation};
	}
	elsif ($opts{token_file})
	{
		push @args, '--token-file', write_file(($opts{token} // $TOKEN) . "\n");
	}
	elsif (!exists $opts{token} || defined $opts{token})
	{
		$env{PROVISION_GITHUB_TOKEN} = $opts{token} // $TOKEN;
	}
	my $port;
	if ($opts{metrics})
	{
		$port = PostgreSQL::Test::Cluster::get_free_port();
		push @args, '--metrics-listen', "127.0.0.1:$port";
	}
	push @args, @{ $opts{args} // [] };

	my $n = ++$seq;
	my $script = File::Basename::basename($0);
	$script =~ s/\.[^.]+$//;
	my $log = "$PostgreSQL::Test::Utils::log_path/${script}_dispatcher_$n.log";
	my $pid = ProvisionTest::_spawn($bin, \@args, \%env, $log);
	my $self = bless {
		pid     => $pid,
		port    => $port,
		host    => '127.0.0.1',
		log     => $log,
		secrets => [],
		args    => \@args,
		http    => HTTP::Tiny->new(timeout => ProvisionTest::timeout(), keep_alive => 0),
	}, 'ProvisionTest::Dispatcher';
	push @running, $self;
	Test::More::note("dispatcher $n: $bin, pid $pid, log $log");
	if (!defined $opts{wait} || $opts{wait})
	{
		my $ok = ProvisionTest::wait_until(sub {
			return -1 unless $self->running;
			return $self->log_content =~ /dispatching to / ? 1 : 0;
		}, interval => 0.05);
		croak "dispatcher did not start; log:\n" . $self->log_content
		  unless $ok && $ok == 1;
	}
	return $self;
}

=pod

=item run_dispatcher_command(\@args, %opts)

Runs the binary to completion (C<--help>, C<--version>, configuration
errors), as C<ProvisionTest::run_listener_command> does for the listener.

=cut

sub run_dispatcher_command
{
	my ($args, %opts) = @_;
	local $ENV{PROVISION_LISTENER} = binary();
	return ProvisionTest::run_listener_command($args, %opts);
}

=pod

=item wait_for_job($node, $job, $code)

Waits until C<$code-E<gt>($row)> is true for the job's row; returns the row.

=item wait_for_run($node, $job)

Waits until the job has a C<workflow_run_id>; returns the row.

=item wait_for_status($node, $job, $status)

Waits until the job has that status; returns the row.

=back

=cut

sub wait_for_job
{
	my ($node, $job, $code, %opts) = @_;
	my $row;
	ProvisionTest::wait_until(sub {
		$row = ProvisionTest::job_row($node, $job);
		return $row && $code->($row);
	}, %opts);
	return $row;
}

sub wait_for_run
{
	my ($node, $job, %opts) = @_;
	return wait_for_job($node, $job, sub { defined $_[0]{workflow_run_id} }, %opts);
}

sub wait_for_status
{
	my ($node, $job, $status, %opts) = @_;
	return wait_for_job($node, $job, sub { $_[0]{status} eq $status }, %opts);
}

END
{
	my $code = $?;
	if ($$ == $parent_pid)
	{
		for my $d (@running)
		{
			$d->stop if $d->running;
		}
	}
	$? = $code;
}

package ProvisionTest::Dispatcher;

use strict;
use warnings;

our @ISA = ('ProvisionTest::Listener');

=pod

=head1 ProvisionTest::Dispatcher METHODS

=over

=item log_lines($from)

The log's JSON lines (C<--log-format json>) from byte offset C<$from>,
decoded; lines that are not JSON are skipped.

=item dispatch_lines($from)

Those whose C<msg> is C<dispatch>.

=item kill9()

SIGKILL, then reaps the process.

=back

=cut

sub log_lines
{
	my ($self, $from) = @_;
	return grep { defined } map { ProvisionTest::decode_json($_) } split /\n/,
	  $self->log_content($from);
}

sub dispatch_lines
{
	my ($self, $from) = @_;
	return grep { ($_->{msg} // '') eq 'dispatch' } $self->log_lines($from);
}

sub kill9
{
	my ($self) = @_;
	kill 'KILL', $self->{pid};
	$self->wait_exit;
}

1;
