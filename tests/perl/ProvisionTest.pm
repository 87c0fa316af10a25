=pod

=head1 NAME

ProvisionTest - harness for the end-to-end TAP tests of provision

=head1 SYNOPSIS

  use PostgreSQL::Test::Utils;
  use Test::More;
  use ProvisionTest;

  my $node = ProvisionTest::new_node('main');        # database "provision"
  my $l = ProvisionTest::start_listener(node => $node);
  my ($agent, $job) = ProvisionTest::new_job($node);

  my $res = $l->callback({ job_id => $job, status => 'provisioning' },
                         delivery => 'd-1');
  is($res->{status}, 200, 'applied');
  is($res->{json}{job_status}, 'provisioning', 'job moved');

  is($l->stop, 0, 'listener exits 0 on SIGTERM');

=head1 DESCRIPTION

Everything a test of the running system needs: a PostgreSQL node with the
extension created in database C<provision>, a least-privileged role for the
listener, secret files, the real C<provision-listener> binary on a free port
with its stderr captured, both signature schemes, HTTP requests (well formed
through L<HTTP::Tiny>, arbitrary bytes through a raw socket), rows of the
extension's tables, C</metrics> parsing and forked parallel clients.

Every wait has a timeout, so a hung listener fails a test instead of hanging
the suite.

Environment:

=over

=item PROVISION_LISTENER

The listener binary; default C<< <repo>/listener/provision-listener >>, where
the repository root is two directories above this file (or
C<PROVISION_ROOT>). Sanitized runs point it at the ASan build.

=item PROVISION_TEST_TIMEOUT

Seconds any single wait may take (default 30); raise it for slow builds such
as valgrind.

=item TESTDIR

Where L<PostgreSQL::Test::Utils> puts C<tmp_check/> (clusters, logs). Created
if missing. Listener logs are C<tmp_check/log/E<lt>testE<gt>_listener_N.log>,
next to C<regress_log_E<lt>testE<gt>>.

=item PG_REGRESS

C<pg_regress>, which C<PostgreSQL::Test::Cluster::init> runs; found next to
the PGXS test modules when unset.

=back

Run a file by hand as a non-root user (initdb refuses root), from the
repository root:

  PATH=/usr/lib/postgresql/15/bin:$PATH \
  PERL5LIB=/usr/lib/postgresql/15/lib/pgxs/src/test/perl:tests/perl \
  TESTDIR=/tmp/tap prove -v tests/t/020_callback.pl

=cut

package ProvisionTest;

use strict;
use warnings;

use Carp;
use Digest::SHA qw(hmac_sha256 hmac_sha256_hex);
use File::Basename qw(dirname);
use File::Spec;
use HTTP::Tiny;
use IPC::Run ();
use JSON::PP ();
use MIME::Base64 qw(encode_base64 decode_base64);
use POSIX ();
use Time::HiRes qw(time sleep);

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils ();

# PostgreSQL::Test::Utils creates only "$TESTDIR/tmp_check" (in an INIT
# block, which runs after every "use" has been compiled), so a fresh TESTDIR
# given by a runner must exist by then.
BEGIN
{
	require File::Path;
	File::Path::make_path($ENV{TESTDIR}) if $ENV{TESTDIR} && !-d $ENV{TESTDIR};
}

our $VERSION = '1.0';

# The project's version: EXTVERSION of the top Makefile, the one place it is
# written.
our $EXTVERSION = do
{
	require File::Basename;
	require Cwd;
	my $root = $ENV{PROVISION_ROOT}
	  // Cwd::abs_path(File::Basename::dirname(__FILE__) . '/../..');
	open my $fh, '<', "$root/Makefile" or die "$root/Makefile: $!";
	my ($v) = map { /^EXTVERSION\s*=\s*(\S+)/ ? $1 : () } <$fh>;
	$v // die "no EXTVERSION in $root/Makefile";
};

# Listeners still running when the test script ends; stopped by END below so
# that no daemon outlives its test.  This END block is compiled after the one
# in PostgreSQL::Test::Cluster, so it runs first: listeners stop before their
# database is torn down.
my @running_listeners;
my $listener_seq = 0;
my $parent_pid   = $$;

my $json = JSON::PP->new->utf8->canonical->allow_nonref;

=pod

=head1 CONFIGURATION

=over

=item repo_root()

The repository root: C<PROVISION_ROOT> if set, else two directories above
this module.

=item listener_binary()

Path of the listener binary (C<PROVISION_LISTENER> or the default in the
repository).

=item timeout()

Seconds a single wait may take (C<PROVISION_TEST_TIMEOUT>, default 30).

=back

=cut

sub repo_root
{
	return $ENV{PROVISION_ROOT} if $ENV{PROVISION_ROOT};
	my $here = dirname(File::Spec->rel2abs(__FILE__));
	return File::Spec->catdir($here, File::Spec->updir, File::Spec->updir);
}

sub listener_binary
{
	return $ENV{PROVISION_LISTENER}
	  || File::Spec->catfile(repo_root(), 'listener', 'provision-listener');
}

sub timeout
{
	return $ENV{PROVISION_TEST_TIMEOUT} || 30;
}

=pod

=head1 JSON

=over

=item encode_json($data), decode_json($text)

Canonical (sorted keys) UTF-8 JSON. C<decode_json> returns undef instead of
dying on malformed text, so a test can assert "the body is JSON".

=back

=cut

sub encode_json { return $json->encode($_[0]); }

sub decode_json
{
	my ($text) = @_;
	return undef unless defined $text;
	my $v = eval { $json->decode($text) };
	return $v;
}

=pod

=head1 DATABASE

=over

=item new_node($name, %opts)

Creates, initializes and starts a L<PostgreSQL::Test::Cluster> node (Unix
socket only), creates database C<provision> and runs
C<CREATE EXTENSION provision> in it. Options: C<extension =E<gt> 0> skips the
extension; C<conf =E<gt> "..."> is appended to postgresql.conf before start.
Returns the node.

=cut

# PostgreSQL::Test::Cluster::init runs "$PG_REGRESS --config-auth", which a
# PGXS install keeps next to the test modules (src/test/regress/pg_regress).
sub _find_pg_regress
{
	return if $ENV{PG_REGRESS} && -x $ENV{PG_REGRESS};
	my $cluster_pm = $INC{'PostgreSQL/Test/Cluster.pm'};
	my $candidate = File::Spec->catfile(dirname($cluster_pm), File::Spec->updir,
		File::Spec->updir, File::Spec->updir, 'regress', 'pg_regress');
	croak "pg_regress not found (set PG_REGRESS); looked at $candidate"
	  unless -x $candidate;
	$ENV{PG_REGRESS} = $candidate;
}

sub new_node
{
	my ($name, %opts) = @_;
	_find_pg_regress();
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	# Room for several listener pools plus the test's own sessions.
	$node->append_conf('postgresql.conf', "max_connections = 100\n");
	$node->append_conf('postgresql.conf', $opts{conf}) if $opts{conf};
	$node->start;
	$node->safe_psql('postgres', 'CREATE DATABASE provision');
	$node->safe_psql('provision', 'CREATE EXTENSION provision')
	  unless defined $opts{extension} && !$opts{extension};
	return $node;
}

=pod

=item conninfo($node, %opts)

A libpq conninfo for the node's Unix socket. Options: C<dbname> (default
C<provision>), C<user> (default: the bootstrap superuser).

=cut

sub conninfo
{
	my ($node, %opts) = @_;
	my $s = sprintf("host=%s port=%d dbname=%s",
		$node->host, $node->port, $opts{dbname} // 'provision');
	$s .= " user=$opts{user}" if defined $opts{user};
	return $s;
}

=pod

=item create_listener_role($node, $role)

Creates login role C<$role> (default C<provision_listener>) holding exactly
what SPEC says the listener needs: C<USAGE ON SCHEMA provision> and
C<EXECUTE ON FUNCTION provision.handle_callback(jsonb, text)>. Returns the
role name.

=cut

sub create_listener_role
{
	my ($node, $role) = @_;
	$role //= 'provision_listener';
	croak "bad role name $role" unless $role =~ /^[a-z_][a-z0-9_]*$/;
	$node->safe_psql(
		'provision', qq{
		CREATE ROLE $role LOGIN;
		GRANT USAGE ON SCHEMA provision TO $role;
		GRANT EXECUTE ON FUNCTION provision.handle_callback(jsonb, text) TO $role;
	});
	return $role;
}

=pod

=item quote_literal($text)

An SQL string literal for C<$text> (test input only; the code under test
never builds SQL from strings).

=cut

sub quote_literal
{
	my ($s) = @_;
	return 'NULL' unless defined $s;
	$s =~ s/'/''/g;
	return "'$s'";
}

=pod

=item query_json($node, $sql)

Runs C<$sql> in database C<provision>; it must return one column of one row
holding JSON (or no row). Returns the decoded value or undef.

=item query_scalar($node, $sql)

Runs C<$sql> in database C<provision> and returns its output as text.

=cut

sub query_json
{
	my ($node, $sql) = @_;
	my $out = $node->safe_psql('provision', $sql);
	return undef if $out eq '';
	my $v = decode_json($out);
	croak "not JSON from <$sql>: $out" unless defined $v;
	return $v;
}

sub query_scalar
{
	my ($node, $sql) = @_;
	return $node->safe_psql('provision', $sql);
}

=pod

=item insert_agent($node, %opts)

Inserts a row into C<provision.agents> (C<name>, default a unique one;
C<status>, default the table's default C<draft>) and returns its id.

=item insert_job($node, $agent_id, %opts)

Creates a job for the agent with C<provision.enqueue_job> (optional
C<idempotency_key>) and, if C<status> is given and not C<pending>, moves it
there with C<provision.update_job_status> (every status is reachable from
C<pending>). Returns the job id.

=item new_job($node, %opts)

A fresh agent and one job for it; C<%opts> as for C<insert_job>. Returns
C<($agent_id, $job_id)>.

=cut

my $agent_seq = 0;

sub insert_agent
{
	my ($node, %opts) = @_;
	my $name = $opts{name} // sprintf('agent-%d-%d', $$, ++$agent_seq);
	my $cols = 'name';
	my $vals = quote_literal($name);
	if (defined $opts{status})
	{
		$cols .= ', status';
		$vals .= ', ' . quote_literal($opts{status});
	}
	return query_scalar($node,
		"INSERT INTO provision.agents ($cols) VALUES ($vals) RETURNING id");
}

sub insert_job
{
	my ($node, $agent, %opts) = @_;
	my $job = query_scalar($node,
		sprintf('SELECT provision.enqueue_job(%s::uuid, %s)',
			quote_literal($agent), quote_literal($opts{idempotency_key})));
	if (defined $opts{status} && $opts{status} ne 'pending')
	{
		query_scalar($node,
			sprintf('SELECT provision.update_job_status(%s::uuid, %s)',
				quote_literal($job), quote_literal($opts{status})));
	}
	return $job;
}

sub new_job
{
	my ($node, %opts) = @_;
	my $agent = insert_agent($node);
	my $job = insert_job($node, $agent, %opts);
	return ($agent, $job);
}

=pod

=item job_row($node, $job_id), agent_row($node, $agent_id),
instance_row($node, $agent_id), delivery_row($node, $delivery_id)

The row as a hash (column => value, as C<row_to_json> renders it), or undef
when there is none.

=item events_for_job($node, $job_id)

The job's rows of C<provision.events>, oldest first, as an array ref.

=cut

sub _row
{
	my ($node, $table, $col, $val) = @_;
	return query_json($node,
		sprintf('SELECT row_to_json(t) FROM provision.%s t WHERE %s = %s',
			$table, $col, quote_literal($val)));
}

sub job_row      { return _row($_[0], 'provisioning_jobs',   'id',          $_[1]); }
sub agent_row    { return _row($_[0], 'agents',              'id',          $_[1]); }
sub instance_row { return _row($_[0], 'agent_instances',     'agent_id',    $_[1]); }
sub delivery_row { return _row($_[0], 'callback_deliveries', 'delivery_id', $_[1]); }

sub events_for_job
{
	my ($node, $job) = @_;
	return query_json($node,
		sprintf(
			'SELECT coalesce(json_agg(e ORDER BY e.id), \'[]\') FROM provision.events e WHERE job_id = %s',
			quote_literal($job)));
}

=pod

=item extension_catalog($node, $dbname)

What the C<provision> extension installed in database C<$dbname>, as a hash
of aspect => text, each text one line per object and free of OIDs and data,
so that two databases compare aspect by aspect: C<members> (every object
of the extension), C<types> (with enum labels), C<relations> (kind,
options, ACL, row security), C<columns> (position, type, NOT NULL,
identity, collation, default, ACL), C<constraints>, C<indexes>,
C<triggers> (user-visible ones), C<functions> (full definition, ACL),
C<sequences> (parameters), C<comments> (of every member, column and
constraint), C<schema> (ACL and comment) and C<extension> (version and the
tables registered with C<pg_extension_config_dump>, with their
conditions).

=cut

my %catalog_queries = (
	members => q{
		SELECT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid)
		  FROM pg_catalog.pg_depend d
		 WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
		   AND d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'provision')
		   AND d.deptype = 'e'
		 ORDER BY 1},
	types => q{
		SELECT t.typname, t.typtype,
		       (SELECT pg_catalog.string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
		          FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid)
		  FROM pg_catalog.pg_type t
		 WHERE t.typnamespace = 'provision'::pg_catalog.regnamespace
		 ORDER BY 1},
	relations => q{
		SELECT c.relname, c.relkind, c.relpersistence, c.reloptions, c.relacl,
		       c.relrowsecurity, c.relhasindex, c.relhastriggers
		  FROM pg_catalog.pg_class c
		 WHERE c.relnamespace = 'provision'::pg_catalog.regnamespace
		 ORDER BY 1},
	columns => q{
		SELECT c.relname, a.attnum, a.attname,
		       pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
		       a.attidentity, a.attgenerated, a.attcollation::pg_catalog.regcollation,
		       pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attacl
		  FROM pg_catalog.pg_class c
		  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
		  LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
		 WHERE c.relnamespace = 'provision'::pg_catalog.regnamespace
		   AND NOT a.attisdropped
		 ORDER BY 1, 2},
	constraints => q{
		SELECT c.conrelid::pg_catalog.regclass::pg_catalog.text, c.conname, c.contype,
		       c.condeferrable, c.condeferred, pg_catalog.pg_get_constraintdef(c.oid)
		  FROM pg_catalog.pg_constraint c
		 WHERE c.connamespace = 'provision'::pg_catalog.regnamespace
		 ORDER BY 1, 2},
	indexes => q{
		SELECT i.indexrelid::pg_catalog.regclass::pg_catalog.text, pg_catalog.pg_get_indexdef(i.indexrelid)
		  FROM pg_catalog.pg_index i
		  JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
		 WHERE c.relnamespace = 'provision'::pg_catalog.regnamespace
		 ORDER BY 1},
	triggers => q{
		SELECT t.tgrelid::pg_catalog.regclass::pg_catalog.text, t.tgname, t.tgenabled,
		       pg_catalog.pg_get_triggerdef(t.oid)
		  FROM pg_catalog.pg_trigger t
		  JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
		 WHERE c.relnamespace = 'provision'::pg_catalog.regnamespace AND NOT t.tgisinternal
		 ORDER BY 1, 2},
	functions => q{
		SELECT p.oid::pg_catalog.regprocedure::pg_catalog.text, p.proacl,
		       pg_catalog.pg_get_functiondef(p.oid)
		  FROM pg_catalog.pg_proc p
		 WHERE p.pronamespace = 'provision'::pg_catalog.regnamespace
		 ORDER BY 1},
	sequences => q{
		SELECT s.seqrelid::pg_catalog.regclass::pg_catalog.text, s.seqtypid::pg_catalog.regtype, s.seqstart,
		       s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle
		  FROM pg_catalog.pg_sequence s
		  JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid
		 WHERE c.relnamespace = 'provision'::pg_catalog.regnamespace
		 ORDER BY 1},
	comments => q{
		SELECT pg_catalog.pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description
		  FROM pg_catalog.pg_description d
		 WHERE (d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass
		        AND d.objoid IN (SELECT oid FROM pg_catalog.pg_class
		                          WHERE relnamespace = 'provision'::pg_catalog.regnamespace))
		    OR (d.classoid = 'pg_catalog.pg_proc'::pg_catalog.regclass
		        AND d.objoid IN (SELECT oid FROM pg_catalog.pg_proc
		                          WHERE pronamespace = 'provision'::pg_catalog.regnamespace))
		    OR (d.classoid = 'pg_catalog.pg_type'::pg_catalog.regclass
		        AND d.objoid IN (SELECT oid FROM pg_catalog.pg_type
		                          WHERE typnamespace = 'provision'::pg_catalog.regnamespace))
		    OR (d.classoid = 'pg_catalog.pg_constraint'::pg_catalog.regclass
		        AND d.objoid IN (SELECT oid FROM pg_catalog.pg_constraint
		                          WHERE connamespace = 'provision'::pg_catalog.regnamespace))
		 ORDER BY 1},
	schema => q{
		SELECT n.nspname, n.nspacl, pg_catalog.obj_description(n.oid, 'pg_namespace')
		  FROM pg_catalog.pg_namespace n WHERE n.nspname = 'provision'},
	extension => q{
		SELECT e.extversion, e.extrelocatable, e.extnamespace::pg_catalog.regnamespace,
		       e.extconfig::pg_catalog.regclass[], e.extcondition
		  FROM pg_catalog.pg_extension e WHERE e.extname = 'provision'},);

sub extension_catalog
{
	my ($node, $dbname) = @_;
	my %catalog;
	for my $aspect (sort keys %catalog_queries)
	{
		$catalog{$aspect} = $node->safe_psql($dbname, $catalog_queries{$aspect});
	}
	return \%catalog;
}

=pod

=back

=head1 SECRETS AND SIGNATURES

=over

=item random_secret(%opts)

A fresh random secret: printable raw bytes, or with C<whsec =E<gt> 1> a
Standard Webhooks secret (C<whsec_> + base64 of 24 random bytes).

=item write_secret_file(@secrets)

Writes the secrets one per line to a new file (mode 0600) in a temporary
directory and returns its path.

=item secret_key($secret)

The HMAC key bytes SPEC derives from a secret: base64-decoded after a
C<whsec_> prefix, otherwise the secret itself.

=item sign_github($secret, $body)

The C<X-Hub-Signature-256> value: C<sha256=> + hex HMAC-SHA256 of the body.

=item sign_standard($secret, $id, $timestamp, $body)

One C<webhook-signature> entry: C<v1,> + base64 HMAC-SHA256 of
C<id.timestamp.body>.

=item random_stripe_secret()

A Stripe-like webhook signing secret: C<whsec_> + 32 random alphanumerics
(Stripe's are not base64; the listener keys with the text as given).

=item sign_stripe($secret, $timestamp, $body)

The C<Stripe-Signature> value C<t=TIMESTAMP,v1=HEX>: hex HMAC-SHA256 of
C<timestamp.body> keyed with the secret's text, C<whsec_> included.

=item stripe_event(%opts)

A Stripe event as a hash ref: C<id> (default a unique C<evt_test_...>),
C<type> (default C<checkout.session.completed>), and a C<checkout.session>
object with C<client_reference_id> (C<agent>; absent when undef),
C<payment_status> (default C<paid>) and C<metadata> (default empty).

=back

=cut

sub _random_bytes
{
	my ($n) = @_;
	open(my $fh, '<:raw', '/dev/urandom') or croak "/dev/urandom: $!";
	my $got = read($fh, my $buf, $n);
	croak "short read from /dev/urandom" unless defined $got && $got == $n;
	close $fh;
	return $buf;
}

sub random_secret
{
	my (%opts) = @_;
	my $raw = _random_bytes(24);
	return 'whsec_' . encode_base64($raw, '') if $opts{whsec};
	# Hex keeps the secret greppable in logs and free of line breaks.
	return 'sk-' . unpack('H*', $raw);
}

sub write_secret_file
{
	my (@secrets) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $path = "$dir/secret";
	my $old = umask(077);
	open(my $fh, '>', $path) or croak "$path: $!";
	print $fh map { "$_\n" } @secrets;
	close $fh or croak "$path: $!";
	umask($old);
	chmod 0600, $path;
	return $path;
}

sub secret_key
{
	my ($secret) = @_;
	return decode_base64(substr($secret, 6)) if $secret =~ /^whsec_/;
	return $secret;
}

sub sign_github
{
	my ($secret, $body) = @_;
	return 'sha256=' . hmac_sha256_hex($body, secret_key($secret));
}

sub random_stripe_secret
{
	my @chars = ('a' .. 'z', 'A' .. 'Z', '0' .. '9');
	return 'whsec_' . join('', map { $chars[ord($_) % @chars] } split //, _random_bytes(32));
}

sub sign_stripe
{
	my ($secret, $ts, $body) = @_;
	return "t=$ts,v1=" . hmac_sha256_hex("$ts.$body", $secret);
}

my $stripe_seq = 0;

sub stripe_event
{
	my (%opts) = @_;
	my $object = {
		object         => 'checkout.session',
		payment_status => $opts{payment_status} // 'paid',
		metadata       => $opts{metadata} // {},
	};
	$object->{client_reference_id} = $opts{agent} if defined $opts{agent};
	return {
		id     => $opts{id} // sprintf('evt_test_%d_%d_%d', $$, time(), ++$stripe_seq),
		object => 'event',
		type   => $opts{type} // 'checkout.session.completed',
		data   => { object => $object },
	};
}

sub sign_standard
{
	my ($secret, $id, $ts, $body) = @_;
	return 'v1,'
	  . encode_base64(hmac_sha256("$id.$ts.$body", secret_key($secret)), '');
}

=pod

=head1 THE LISTENER

=over

=item start_listener(%opts)

Starts the real listener binary on a free 127.0.0.1 port and waits until
C</healthz> answers 200. Returns a C<ProvisionTest::Listener> object. Options:

=over

=item node

The database node; the conninfo defaults to C<conninfo($node, user =E<gt> $opts{user})>.

=item user, dbname

Role and database for the default conninfo.

=item database

A conninfo string instead of the default.

=item secrets

Array ref of secrets written to a secret file (default: one random secret).

=item secret_file

Use this file instead (then C<secrets> only tells the object how to sign).

=item secret_env

Pass the secrets in C<PROVISION_WEBHOOK_SECRET> instead of a file.

=item stripe_secrets

Array ref of Stripe secrets, written to a file passed with
C<--stripe-secret-file> (default: none, so C<POST /webhooks/stripe> is 404).

=item stripe_secret_env

Pass the Stripe secrets in C<PROVISION_STRIPE_WEBHOOK_SECRET> instead.

=item args

Array ref of further command-line arguments (e.g. C<['--pool', 2]>).

=item env

Hash ref of further environment variables. Every other C<PROVISION_*>
variable is removed from the child's environment.

=item port

Listen on this port instead of a free one.

=item via_env

Pass the address and the conninfo in C<PROVISION_LISTEN> and
C<PROVISION_DATABASE_URL> instead of C<--listen> and C<--database>.

=item wait

0 to return without waiting for C</healthz>.

=back

=back

=cut

sub start_listener
{
	my (%opts) = @_;
	my $bin = listener_binary();
	croak "listener binary $bin is not executable" unless -x $bin;

	my @secrets = @{ $opts{secrets} // [ random_secret() ] };
	my $port = $opts{port} // PostgreSQL::Test::Cluster::get_free_port();
	my $db = $opts{database};
	$db //= conninfo($opts{node}, user => $opts{user}, dbname => $opts{dbname})
	  if $opts{node};

	my %env = %{ $opts{env} // {} };
	my @args;
	if ($opts{via_env})
	{
		$env{PROVISION_LISTEN} = "127.0.0.1:$port";
		$env{PROVISION_DATABASE_URL} = $db if defined $db;
	}
	else
	{
		push @args, '--listen', "127.0.0.1:$port";
		push @args, '--database', $db if defined $db;
	}
	my $secret_file;
	if ($opts{secret_env})
	{
		$env{PROVISION_WEBHOOK_SECRET} = join("\n", @secrets);
	}
	else
	{
		$secret_file = $opts{secret_file} // write_secret_file(@secrets);
		push @args, '--secret-file', $secret_file;
	}
	my @stripe_secrets = @{ $opts{stripe_secrets} // [] };
	my $stripe_secret_file;
	if (@stripe_secrets && $opts{stripe_secret_env})
	{
		$env{PROVISION_STRIPE_WEBHOOK_SECRET} = join("\n", @stripe_secrets);
	}
	elsif (@stripe_secrets)
	{
		$stripe_secret_file = write_secret_file(@stripe_secrets);
		push @args, '--stripe-secret-file', $stripe_secret_file;
	}
	push @args, @{ $opts{args} // [] };

	my $n = ++$listener_seq;
	my $script = File::Basename::basename($0);
	$script =~ s/\.[^.]+$//;
	my $log = "$PostgreSQL::Test::Utils::log_path/${script}_listener_$n.log";

	my $pid = _spawn($bin, \@args, \%env, $log);
	my $self = bless {
		pid         => $pid,
		port        => $port,
		host        => '127.0.0.1',
		log         => $log,
		secrets     => \@secrets,
		secret_file => $secret_file,
		stripe_secrets     => \@stripe_secrets,
		stripe_secret_file => $stripe_secret_file,
		args        => \@args,
		http        => HTTP::Tiny->new(timeout => timeout(), keep_alive => 0),
	}, 'ProvisionTest::Listener';
	push @running_listeners, $self;
	note("listener $n: $bin, pid $pid, port $port, log $log");

	$self->wait_healthy unless defined $opts{wait} && !$opts{wait};
	return $self;
}

sub note { Test::More::note(@_); }

# fork + exec with a scrubbed PROVISION_* environment and stdout/stderr
# appended to $log.  The child never returns into the test script (that would
# run its END blocks and tear down the cluster).
sub _spawn
{
	my ($bin, $args, $env, $log) = @_;
	my $pid = fork();
	croak "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		delete $ENV{$_} for grep { /^PROVISION_/ } keys %ENV;
		$ENV{$_} = $env->{$_} for keys %$env;
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>>', $log) or POSIX::_exit(127);
		open(STDERR, '>&', \*STDOUT) or POSIX::_exit(127);
		exec($bin, @$args) or POSIX::_exit(127);
	}
	return $pid;
}

=pod

=over

=item run_listener_command(\@args, %opts)

Runs the listener binary to completion (for C<--help>, C<--version> and
configuration errors). Options: C<env> (hash ref; other C<PROVISION_*>
variables are removed), C<timeout> (seconds). Returns a hash ref with
C<exit> (exit status, or undef if it had to be killed), C<signal>,
C<stdout>, C<stderr>, C<timed_out>.

=back

=cut

sub run_listener_command
{
	my ($args, %opts) = @_;
	my $bin = listener_binary();
	my %saved = %ENV;
	delete $ENV{$_} for grep { /^PROVISION_/ } keys %ENV;
	my %env = %{ $opts{env} // {} };
	$ENV{$_} = $env{$_} for keys %env;
	my ($out, $err) = ('', '');
	my $t = IPC::Run::timeout($opts{timeout} // timeout());
	my $h = IPC::Run::start([ $bin, @$args ],
		'<', \'', '>', \$out, '2>', \$err, $t);
	my $timed_out = 0;
	eval { $h->finish; 1 } or do {
		$timed_out = 1;
		$h->kill_kill;
	};
	%ENV = %saved;
	my $status = $h->full_result(0);
	return {
		exit      => $timed_out || ($status & 127) ? undef : $status >> 8,
		signal    => $status & 127,
		stdout    => $out,
		stderr    => $err,
		timed_out => $timed_out,
	};
}

=pod

=head1 PARALLEL CLIENTS

=over

=item fork_clients($n, $code, %opts)

Runs C<$code-E<gt>($i)> in C<$n> forked processes (C<$i> = 0 .. $n-1) and
returns an array ref of their return values (each must be JSON-encodable;
undef for a child that died or timed out, with the reason noted). Children
must not run Test::More assertions; they leave with C<POSIX::_exit> so the
test script's END blocks (cluster teardown) run only in the parent. Waits at
most C<timeout =E<gt> seconds> (default C<timeout()>) and kills stragglers.

=item start_clients($n, $code), finish_clients($clients, %opts)

The same in two steps, so the test can act while the clients run:
C<start_clients> returns at once, C<finish_clients> waits (C<timeout>) and
returns the array ref of results.

=back

=cut

sub fork_clients
{
	my ($n, $code, %opts) = @_;
	return finish_clients(start_clients($n, $code), %opts);
}

sub start_clients
{
	my ($n, $code) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my %pids;
	for my $i (0 .. $n - 1)
	{
		my $pid = fork();
		croak "fork: $!" unless defined $pid;
		if ($pid == 0)
		{
			my $status = 0;
			my $ok = eval {
				my $r = $code->($i);
				open(my $fh, '>', "$dir/$i.tmp") or die "$dir/$i.tmp: $!";
				print $fh encode_json([$r]);
				close $fh or die "close: $!";
				rename("$dir/$i.tmp", "$dir/$i.json") or die "rename: $!";
				1;
			};
			unless ($ok)
			{
				print STDERR "client $i died: $@";
				$status = 1;
			}
			POSIX::_exit($status);
		}
		$pids{$pid} = $i;
	}
	return { dir => $dir, n => $n, pids => \%pids };
}

sub finish_clients
{
	my ($c, %opts) = @_;
	my %pids = %{ $c->{pids} };
	my $deadline = time() + ($opts{timeout} // timeout());
	# Reap only these children: the caller may have others of its own.
	while (%pids && time() < $deadline)
	{
		for my $pid (keys %pids)
		{
			delete $pids{$pid} if waitpid($pid, POSIX::WNOHANG()) != 0;
		}
		sleep(0.05) if %pids;
	}
	for my $pid (keys %pids)
	{
		note("client $pids{$pid} timed out; killing it");
		kill 'KILL', $pid;
		waitpid($pid, 0);
	}
	my @results;
	for my $i (0 .. $c->{n} - 1)
	{
		my $f = "$c->{dir}/$i.json";
		if (open(my $fh, '<', $f))
		{
			local $/;
			my $v = decode_json(<$fh>);
			push @results, $v ? $v->[0] : undef;
		}
		else
		{
			push @results, undef;
		}
	}
	return \@results;
}

=pod

=head1 WAITING

=over

=item wait_until($code, %opts)

Calls C<$code> every C<interval> seconds (default 0.1) until it returns true
or C<timeout> seconds (default C<timeout()>) pass. Returns the last value.

=back

=cut

sub wait_until
{
	my ($code, %opts) = @_;
	my $deadline = time() + ($opts{timeout} // timeout());
	while (1)
	{
		my $v = $code->();
		return $v if $v;
		return $v if time() >= $deadline;
		sleep($opts{interval} // 0.1);
	}
}

=pod

=head1 METRICS

=over

=item parse_metrics($text)

Parses Prometheus text format into a hash ref of series,
C<name{label="v",...}> (labels sorted) => numeric value. Comment lines are
skipped.

=item metric_sum($metrics, $name, \%labels)

Sum of every series named C<$name> whose labels include all of C<%labels>
(the empty hash matches all). Returns undef if no series matched.

=back

=cut

sub parse_metrics
{
	my ($text) = @_;
	my %m;
	for my $line (split /\n/, $text // '')
	{
		next if $line =~ /^\s*(#|$)/;
		my ($name, $labels, $value) =
		  $line =~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/
		  or next;
		my @pairs;
		while (($labels // '') =~ /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)
		{
			push @pairs, [ $1, $2 ];
		}
		my $key = $name;
		$key .= '{' . join(',', map { qq{$_->[0]="$_->[1]"} } sort { $a->[0] cmp $b->[0] } @pairs) . '}'
		  if @pairs;
		$value = 9**9**9 if $value eq '+Inf';
		$m{$key} = $value + 0;
	}
	return \%m;
}

sub metric_sum
{
	my ($m, $name, $labels) = @_;
	$labels //= {};
	my ($sum, $found) = (0, 0);
  SERIES:
	for my $key (keys %$m)
	{
		my ($n, $l) = $key =~ /^([^{]+)(?:\{(.*)\})?$/;
		next unless $n eq $name;
		my %have;
		while (($l // '') =~ /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)
		{
			$have{$1} = $2;
		}
		for my $k (keys %$labels)
		{
			next SERIES unless defined $have{$k} && $have{$k} eq $labels->{$k};
		}
		$sum += $m->{$key};
		$found = 1;
	}
	return $found ? $sum : undef;
}

=pod

=head1 RAW HTTP

=over

=item parse_response($bytes)

Splits an HTTP/1.x response into a hash ref: C<status>, C<reason>,
C<headers> (lower-cased names), C<content>, C<json> (decoded content or
undef), C<raw>. Returns undef if there is no status line.

=back

=cut

sub parse_response
{
	my ($raw) = @_;
	return undef unless defined $raw && $raw =~ m{^HTTP/1\.[01] (\d{3})([^\r\n]*)\r\n};
	my ($status, $reason) = ($1, $2);
	my ($head, $body) = split /\r\n\r\n/, $raw, 2;
	my %h;
	for my $line (split /\r\n/, $head)
	{
		next unless $line =~ /^([^:\s]+):\s*(.*?)\s*$/;
		my $k = lc $1;
		$h{$k} = defined $h{$k} ? "$h{$k}, $2" : $2;
	}
	$body //= '';
	if (($h{'transfer-encoding'} // '') =~ /chunked/i)
	{
		my $decoded = '';
		while ($body =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//)
		{
			my $len = hex $1;
			last if $len == 0;
			$decoded .= substr($body, 0, $len, '');
			$body =~ s/^\r\n//;
		}
		$body = $decoded;
	}
	elsif (defined $h{'content-length'})
	{
		$body = substr($body, 0, $h{'content-length'});
	}
	return {
		status  => $status + 0,
		reason  => $reason,
		headers => \%h,
		content => $body,
		json    => decode_json($body),
		raw     => $raw,
	};
}

# Stop every listener a test left running (exit of the parent only).
END
{
	my $exit_code = $?;
	if ($$ == $parent_pid)
	{
		for my $l (@running_listeners)
		{
			$l->stop if $l->running;
		}
	}
	$? = $exit_code;
}

package ProvisionTest::Listener;

use strict;
use warnings;

use Carp;
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(time sleep);

=pod

=head1 ProvisionTest::Listener METHODS

=over

=item pid, port, log, secrets, stripe_secrets, secret_file, stripe_secret_file, base_url, url($path)

Process id, TCP port, path of the stderr log, the secrets it verifies with
(the first signs by default), its Stripe secrets, the files they were
written to (undef when passed in the environment),
C<http://127.0.0.1:PORT> and a full URL.

=cut

sub pid      { return $_[0]{pid}; }
sub port     { return $_[0]{port}; }
sub log      { return $_[0]{log}; }
sub secrets  { return @{ $_[0]{secrets} }; }
sub stripe_secrets     { return @{ $_[0]{stripe_secrets} }; }
sub secret_file        { return $_[0]{secret_file}; }
sub stripe_secret_file { return $_[0]{stripe_secret_file}; }
sub base_url { return "http://$_[0]{host}:$_[0]{port}"; }
sub url      { return $_[0]->base_url . $_[1]; }

=pod

=item log_content($from)

The listener's stderr so far (from byte offset C<$from>, default 0).
C<log_size> gives the current size, for reading only what a step added.

=cut

sub log_content
{
	my ($self, $from) = @_;
	open(my $fh, '<:raw', $self->{log}) or return '';
	seek($fh, $from // 0, 0);
	local $/;
	my $c = <$fh>;
	return $c // '';
}

sub log_size { return -s $_[0]{log} // 0; }

=pod

=item wait_for_log($regex, $from)

Waits (with timeout) until the log from offset C<$from> matches; returns
the matching text or undef.

=cut

sub wait_for_log
{
	my ($self, $re, $from) = @_;
	my $found;
	ProvisionTest::wait_until(sub {
		my $c = $self->log_content($from);
		return 0 unless $c =~ /($re)/;
		$found = $1;
		return 1;
	});
	return $found;
}

=pod

=item running()

True while the process has not exited (reaps it if it has).

=cut

sub running
{
	my ($self) = @_;
	return 0 if defined $self->{status};
	my $r = waitpid($self->{pid}, POSIX::WNOHANG());
	return 1 if $r == 0;
	$self->{status} = $r > 0 ? $? : -1;
	return 0;
}

=pod

=item wait_exit($timeout)

Waits for the process to exit and returns its exit code (C<128+signal> if a
signal killed it), or undef if it is still running after C<$timeout>
seconds.

=item exit_code()

That exit code once the process has been reaped, else undef.

=cut

sub exit_code
{
	my ($self) = @_;
	my $s = $self->{status};
	return undef unless defined $s;
	return -1 if $s == -1;
	return 128 + ($s & 127) if $s & 127;
	return $s >> 8;
}

sub wait_exit
{
	my ($self, $timeout) = @_;
	ProvisionTest::wait_until(sub { !$self->running },
		timeout => $timeout // ProvisionTest::timeout(), interval => 0.02);
	return $self->exit_code;
}

=pod

=item signal($name)

Sends a signal to the listener.

=item stop(%opts)

Sends SIGTERM (or C<signal =E<gt> 'INT'>), waits up to C<timeout> seconds and
returns the exit code as C<wait_exit> does. A listener that does not exit in
time is killed with SIGKILL and undef is returned.

=cut

sub signal { kill $_[1], $_[0]{pid}; }

sub stop
{
	my ($self, %opts) = @_;
	my $code;
	if ($self->running)
	{
		kill($opts{signal} // 'TERM', $self->{pid});
		$code = $self->wait_exit($opts{timeout});
		if (!defined $code)
		{
			ProvisionTest::note("listener $self->{pid} ignored SIGTERM; killing it");
			kill 'KILL', $self->{pid};
			waitpid($self->{pid}, 0);
			$self->{status} = $?;
		}
	}
	else
	{
		$code = $self->exit_code;
	}
	$self->check_sanitizer_report;
	return $code;
}

=pod

=item check_sanitizer_report()

Fails a test (once per listener) if the log holds an AddressSanitizer,
LeakSanitizer or UndefinedBehaviorSanitizer report, so a sanitized run
cannot pass on a report that did not change the exit status. C<stop> calls
it.

=cut

sub check_sanitizer_report
{
	my ($self) = @_;
	return if $self->{sanitizer_checked}++;
	my $log = $self->log_content;
	if ($log =~ /(==\d+==ERROR: \w+Sanitizer.*|^.*runtime error: .*$)/m)
	{
		Test::More::fail("sanitizer report in $self->{log}: $1");
	}
}

=pod

=item wait_healthy()

Waits until C<GET /healthz> answers 200; dies (with the log) if the process
exits or the timeout passes.

=cut

sub wait_healthy
{
	my ($self) = @_;
	my $ok = ProvisionTest::wait_until(sub {
		return -1 unless $self->running;
		my $r = HTTP::Tiny->new(timeout => 2)->get($self->url('/healthz'));
		return $r->{status} == 200 ? 1 : 0;
	}, interval => 0.05);
	return 1 if $ok && $ok == 1;
	my $why = $self->running ? 'no 200 from /healthz in time' : 'exited with ' . $self->exit_code;
	$self->stop if $self->running;
	croak "listener did not start ($why); log:\n" . $self->log_content;
}

=pod

=item request($method, $path, %opts)

One HTTP request through L<HTTP::Tiny>. Options: C<body>, C<headers> (hash
ref). Returns a hash ref with C<status> (599 for a transport error),
C<headers> (lower-cased), C<content> and C<json> (decoded content or undef).

=cut

sub request
{
	my ($self, $method, $path, %opts) = @_;
	my %args = (headers => $opts{headers} // {});
	$args{content} = $opts{body} if defined $opts{body};
	my $http = $opts{timeout} ? HTTP::Tiny->new(timeout => $opts{timeout}, keep_alive => 0) : $self->{http};
	my $r = $http->request($method, $self->url($path), \%args);
	return {
		status  => $r->{status},
		reason  => $r->{reason},
		headers => $r->{headers} // {},
		content => $r->{content} // '',
		json    => ProvisionTest::decode_json($r->{content}),
	};
}

sub get { my ($self, $path, %o) = @_; return $self->request('GET', $path, %o); }

=pod

=item callback($payload, %opts)

POSTs a callback. C<$payload> is a hash ref (encoded as JSON) or a string
sent as is. Options:

=over

=item scheme

C<github> (default), C<standard>, C<both> or C<none>.

=item secret

Signing secret (default: the listener's first secret).

=item delivery

Delivery id: C<X-GitHub-Delivery> / C<webhook-id> (default: a unique one
for C<standard>, none for C<github>).

=item timestamp

C<webhook-timestamp> (default: now).

=item signature

Override the signature header value (for the chosen scheme).

=item path

Default C</webhooks/github>.

=item content_type

Default C<application/json>; undef is not allowed here (use C<raw>).

=item headers

Extra headers (hash ref), applied last.

=back

=cut

my $delivery_seq = 0;

sub callback_headers
{
	my ($self, $body, %opts) = @_;
	my $scheme = $opts{scheme} // 'github';
	my $secret = $opts{secret} // $self->{secrets}[0];
	my %h = ('Content-Type' => $opts{content_type} // 'application/json');
	if ($scheme eq 'github' || $scheme eq 'both')
	{
		$h{'X-Hub-Signature-256'} = $opts{signature}
		  // ProvisionTest::sign_github($secret, $body);
		$h{'X-GitHub-Delivery'} = $opts{delivery} if defined $opts{delivery};
	}
	if ($scheme eq 'standard' || $scheme eq 'both')
	{
		my $id = $opts{delivery} // sprintf('msg_%d_%d_%d', $$, time(), ++$delivery_seq);
		my $ts = $opts{timestamp} // int(time());
		$h{'webhook-id'}        = $id;
		$h{'webhook-timestamp'} = $ts;
		$h{'webhook-signature'} = $opts{signature}
		  // ProvisionTest::sign_standard($secret, $id, $ts, $body);
	}
	%h = (%h, %{ $opts{headers} // {} });
	return \%h;
}

sub callback
{
	my ($self, $payload, %opts) = @_;
	my $body = ref $payload ? ProvisionTest::encode_json($payload) : $payload;
	my $h = $self->callback_headers($body, %opts);
	return $self->request('POST', $opts{path} // '/webhooks/github',
		body => $body, headers => $h, timeout => $opts{timeout});
}

=pod

=item stripe($event, %opts)

POSTs a Stripe event to C</webhooks/stripe>. C<$event> is a hash ref
(encoded as JSON) or a string sent as is. Options: C<secret> (default the
listener's first Stripe secret), C<timestamp> (default now), C<signature>
(the whole C<Stripe-Signature> value), C<content_type>, C<headers> (extra,
applied last), C<path>.

=cut

sub stripe
{
	my ($self, $event, %opts) = @_;
	my $body = ref $event ? ProvisionTest::encode_json($event) : $event;
	my $secret = $opts{secret} // $self->{stripe_secrets}[0] // 'whsec_none';
	my %h = (
		'Content-Type'     => $opts{content_type} // 'application/json',
		'Stripe-Signature' => $opts{signature}
		  // ProvisionTest::sign_stripe($secret, $opts{timestamp} // int(time()), $body));
	%h = (%h, %{ $opts{headers} // {} });
	return $self->request('POST', $opts{path} // '/webhooks/stripe',
		body => $body, headers => \%h, timeout => $opts{timeout});
}

=pod

=item metrics()

C<GET /metrics> parsed with C<parse_metrics>.

=cut

sub metrics
{
	my ($self) = @_;
	my $r = $self->get('/metrics');
	Carp::croak("GET /metrics: $r->{status}") unless $r->{status} == 200;
	return ProvisionTest::parse_metrics($r->{content});
}

=pod

=item connect()

A new blocking TCP connection to the listener (IO::Socket::INET).

=item raw($bytes, %opts)

Writes C<$bytes> on a new connection and reads the response until the
server closes the connection, a complete response has arrived, or
C<timeout> seconds pass. With C<then =E<gt> [$bytes2, ...]> further pieces
are written after C<delay> seconds each (ignoring write errors: the server
may already have answered). Returns C<parse_response> of what was read
(undef if nothing), with C<elapsed> seconds added.

=cut

sub connect
{
	my ($self) = @_;
	my $s = IO::Socket::INET->new(
		PeerAddr => $self->{host},
		PeerPort => $self->{port},
		Proto    => 'tcp',
		Timeout  => ProvisionTest::timeout()) or Carp::croak("connect: $!");
	binmode $s;
	return $s;
}

sub raw
{
	my ($self, $bytes, %opts) = @_;
	my $t0 = time();
	my $s = $self->connect;
	_write_all($s, $bytes);
	for my $piece (@{ $opts{then} // [] })
	{
		sleep($opts{delay} // 0.05);
		last unless _write_all($s, $piece);
	}
	my $raw = read_response($s, $opts{timeout});
	close $s;
	my $r = ProvisionTest::parse_response($raw);
	$r->{elapsed} = time() - $t0 if $r;
	return $r;
}

sub _write_all
{
	my ($s, $bytes) = @_;
	my $off = 0;
	while ($off < length $bytes)
	{
		my $n = syswrite($s, $bytes, length($bytes) - $off, $off);
		return 0 unless defined $n;
		$off += $n;
	}
	return 1;
}

=pod

=item read_response($socket, $timeout)

Reads from a socket until a complete HTTP response (by Content-Length or
final chunk), EOF or the timeout; returns the bytes read.

=back

=cut

sub read_response
{
	my ($s, $timeout) = @_;
	my $deadline = time() + ($timeout // ProvisionTest::timeout());
	my $sel = IO::Select->new($s);
	my $buf = '';
	while (time() < $deadline)
	{
		last if _complete($buf);
		next unless $sel->can_read(0.05);
		my $n = sysread($s, $buf, 65536, length $buf);
		last unless $n;
	}
	return $buf;
}

sub _complete
{
	my ($buf) = @_;
	my $i = index($buf, "\r\n\r\n");
	return 0 if $i < 0;
	my $head = substr($buf, 0, $i);
	my $body_len = length($buf) - $i - 4;
	return $body_len >= $1 if $head =~ /^content-length:\s*(\d+)/mi;
	return substr($buf, -5) eq "0\r\n\r\n" if $head =~ /^transfer-encoding:\s*chunked/mi;
	return 0;
}

1;
