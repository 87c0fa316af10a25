
# A host that runs only the listener, as the operator guide builds it: with
# no PostgreSQL server and no pg_config, `make -C listener` builds the
# listener and `make -C listener install` installs it under PREFIX, while the
# top-level `make` stops with a line that says to build the listener alone.

use strict;
use warnings;

use File::Temp ();
use IPC::Run ();
use PostgreSQL::Test::Utils;
use Test::More;
use ProvisionTest;

my $root = ProvisionTest::repo_root();
my $copy = File::Temp::tempdir('provision-listener-host-XXXXXX', TMPDIR => 1, CLEANUP => 1);
system("tar -C '$root' --exclude=listener/build --exclude=listener/provision-listener"
	  . " -cf - Makefile listener common tests/unit | tar -C '$copy' -xf -") == 0
  or BAIL_OUT("copying the sources to $copy failed");

# No PostgreSQL server: PG_CONFIG names nothing. (libpq-dev's own pg_config
# may be on PATH; it knows no server headers either.)
my %env = (PG_CONFIG => '/nonexistent/pg_config');

sub make
{
	my (@args) = @_;
	my ($out, $err) = ('', '');
	local @ENV{ keys %env } = values %env;
	IPC::Run::run([ 'make', '-s', '-C', $copy, @args ], '>', \$out, '2>', \$err,
		IPC::Run::timeout(10 * ProvisionTest::timeout()));
	return ($? >> 8, $out, $err);
}

my ($rc, $out, $err) = make();
isnt($rc, 0, 'the top-level make needs the PostgreSQL server headers');
like($err, qr/^On a host that runs only the listener: make -C listener && make -C listener install$/m,
	'and says how to build the listener alone');

($rc, $out, $err) = make('-C', 'listener');
is($rc, 0, 'make -C listener builds without pg_config') or diag($err);
($rc, $out, $err) = make('-C', 'listener', 'install', "DESTDIR=$copy/root", 'PREFIX=/usr/local');
is($rc, 0, 'make -C listener install installs') or diag($err);
my $bin = "$copy/root/usr/local/bin/provision-listener";
ok(-x $bin, 'into $(DESTDIR)$(PREFIX)/bin');
like(`'$bin' --version`, qr/^provision-listener \Q$ProvisionTest::EXTVERSION\E\b/,
	'the installed listener runs');

done_testing();
