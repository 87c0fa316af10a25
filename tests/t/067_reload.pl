
# SIGHUP re-reads the secret files (callback and Stripe) in the running
# process: a rotation done with reloads only (the old and the new secret
# both verify during the overlap, the old one is refused after); a file
# that no longer passes the secret rules, or is gone, keeps the secrets in
# use, logs why (naming the file and line, never a secret) and the process
# goes on; secrets from the environment stay; no request and no kept-alive
# connection fails while reloads happen under load.

use strict;
use warnings;

use HTTP::Tiny;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use ProvisionTest;

my $node = ProvisionTest::new_node('reload');
my $old = ProvisionTest::random_secret();
my $new = ProvisionTest::random_secret(whsec => 1);
my $stripe_old = ProvisionTest::random_stripe_secret();
my $stripe_new = ProvisionTest::random_stripe_secret();

my $dir = PostgreSQL::Test::Utils::tempdir();
my $file = "$dir/webhook-secret";
my $stripe_file = "$dir/stripe-secret";

# Written to a temporary name and renamed, as an operator (or a secrets
# agent) should, so that a reload never sees half a file.
sub put
{
	my ($path, $text) = @_;
	open(my $fh, '>', "$path.tmp") or die "$path.tmp: $!";
	print $fh $text;
	close $fh or die "$path.tmp: $!";
	chmod 0600, "$path.tmp";
	rename("$path.tmp", $path) or die "rename $path: $!";
}

put($file, "$old\n");
put($stripe_file, "$stripe_old\n");
my $l = ProvisionTest::start_listener(node => $node, secret_file => $file, secrets => [$old],
	args => [ '--stripe-secret-file', $stripe_file ]);
my $pid = $l->pid;
my (undef, $job) = ProvisionTest::new_job($node, status => 'provisioning');
my $hb = { job_id => $job, status => 'heartbeat' };

sub status_with
{
	my ($secret, %opts) = @_;
	return $l->callback($hb, secret => $secret, %opts)->{status};
}

sub stripe_status
{
	my ($secret) = @_;
	return $l->stripe(ProvisionTest::stripe_event(type => 'customer.created'), secret => $secret)
	  ->{status};
}

# Sends SIGHUP and waits for the reload's log lines (or its warning).
sub reload
{
	my ($expect) = @_;
	my $from = $l->log_size;
	$l->signal('HUP');
	return $l->wait_for_log($expect // qr/[^\n]*SIGHUP: [^\n]*/, $from);
}

is(status_with($old), 200, 'before: the old secret verifies');
is(status_with($new), 401, 'before: the new one does not');
is(stripe_status($stripe_old), 200, 'before: the old Stripe secret verifies');

# --- a rotation with reloads only ---
put($file, "$old\n$new\n");
put($stripe_file, "$stripe_old\n$stripe_new\n");
my $line = reload(qr/[^\n]*Stripe secrets reloaded[^\n]*/);
ok($line, 'SIGHUP reloads') or diag $l->log_content;
like($l->log_content, qr/SIGHUP: 2 callback secrets reloaded from \Q$file\E/,
	'the log names how many callback secrets and the file');
like($line, qr/SIGHUP: 2 Stripe secrets reloaded from \Q$stripe_file\E/, 'and the Stripe file');
is(status_with($old), 200, 'overlap: the old secret verifies');
is(status_with($new), 200, 'overlap: the new secret verifies');
is(status_with($new, scheme => 'standard'), 200, 'overlap: the new whsec_ secret, Standard Webhooks');
is(stripe_status($stripe_old), 200, 'overlap: the old Stripe secret verifies');
is(stripe_status($stripe_new), 200, 'overlap: the new Stripe secret verifies');

put($file, "$new\n");
put($stripe_file, "$stripe_new\n");
ok(reload(qr/[^\n]*Stripe secrets reloaded[^\n]*/), 'SIGHUP after the old secrets are removed');
is(status_with($old), 401, 'after: the old secret is refused');
is(status_with($new), 200, 'after: the new secret verifies');
is(stripe_status($stripe_old), 401, 'after: the old Stripe secret is refused');
is(stripe_status($stripe_new), 200, 'after: the new Stripe secret verifies');
is($l->pid, $pid, 'the same process throughout');
ok($l->running, 'still running');

# --- a file that no longer passes the rules keeps the secrets in use ---
my $short = 'short-secret';
put($file, "$new\n$short\n");
$line = reload(qr/[^\n]*secrets not reloaded[^\n]*/);
like($line, qr/keeping the ones in use: invalid secret file \Q$file\E: secret on line 2 is shorter than 16 bytes/,
	'a short secret: the warning names the file, the line and the rule');
unlike($line, qr/\Q$short\E|\Q$new\E/, 'and no secret');
ok($l->running, 'the listener goes on');
is(status_with($new), 200, 'the secret in use still verifies');
is(status_with($short), 401, 'the refused file did not add its secret');

# A broken Stripe file keeps the callback secrets too: both or neither.
put($file, "$new\n$old\n");
put($stripe_file, " $stripe_old\n");
$line = reload(qr/[^\n]*secrets not reloaded[^\n]*/);
like($line, qr/\Q$stripe_file\E: secret on line 1 starts or ends with whitespace/,
	'a Stripe secret with a leading space: warned');
is(status_with($old), 401, 'the good callback file was not applied alone');
is(stripe_status($stripe_new), 200, 'the Stripe secret in use still verifies');

unlink $stripe_file;
$line = reload(qr/[^\n]*secrets not reloaded[^\n]*/);
like($line, qr/cannot open secret file \Q$stripe_file\E: No such file/, 'a missing file: warned');
is(stripe_status($stripe_new), 200, 'and the secrets in use stay');

put($stripe_file, "$stripe_new\n");
ok(reload(qr/[^\n]*Stripe secrets reloaded[^\n]*/), 'once the files are fixed, a reload applies them');
is(status_with($old), 200, 'the callback file is applied now');
unlike($l->log_content, qr/\Q$old\E|\Q$new\E|\Q$stripe_old\E|\Q$stripe_new\E/,
	'no secret in the log');

# --- no request fails while reloads happen under load ---
# Clients sign with a secret present in every version of the file, over
# kept-alive connections, while the file flips between two versions and
# SIGHUP arrives every 20 ms.
{
	put($file, "$new\n");
	ok(reload(qr/[^\n]*callback secrets reloaded[^\n]*/), 'load: starting from the new secret');
	my $port = $l->port;
	my $clients = ProvisionTest::start_clients(4, sub {
		my ($i) = @_;
		my $http = HTTP::Tiny->new(timeout => 10, keep_alive => 1);
		my (undef, $cjob) = (undef, $job);
		my %seen;
		my $body = ProvisionTest::encode_json({ job_id => $cjob, status => 'heartbeat' });
		my $deadline = time() + 4;
		my $n = 0;
		while (time() < $deadline)
		{
			my $scheme = $n % 2;
			my %h = ('Content-Type' => 'application/json');
			if ($scheme)
			{
				my $ts = int(time());
				my $id = "load-$i-$n";
				%h = (%h, 'webhook-id' => $id, 'webhook-timestamp' => $ts,
					'webhook-signature' => ProvisionTest::sign_standard($new, $id, $ts, $body));
			}
			else
			{
				$h{'X-Hub-Signature-256'} = ProvisionTest::sign_github($new, $body);
			}
			my $r = $http->request('POST', "http://127.0.0.1:$port/webhooks/github",
				{ headers => \%h, content => $body });
			$seen{ $r->{status} }++;
			$n++;
		}
		return \%seen;
	});
	my $flips = 0;
	my $until = time() + 4;
	while (time() < $until)
	{
		put($file, $flips % 2 ? "$new\n" : "$new\n$old\n");
		$l->signal('HUP');
		$flips++;
		sleep(0.02);
	}
	my $results = ProvisionTest::finish_clients($clients, timeout => 30);
	my %total;
	for my $r (@$results)
	{
		$total{$_} += $r->{$_} for keys %{ $r // {} };
	}
	my $n = 0;
	$n += $_ for values %total;
	cmp_ok($n, '>', 50, "load: $n requests sent during $flips reloads");
	is_deeply([ sort keys %total ], [200], 'load: every request answered 200 (none 401, none dropped)')
	  or diag explain \%total;
	is(scalar(grep { defined } @$results), 4, 'load: every client finished');
	ok($l->running, 'load: the listener is still running');
	my $reloads = () = $l->log_content =~ /callback secrets reloaded/g;
	cmp_ok($reloads, '>', 10, "load: the reloads happened ($reloads logged)");
}

is($l->stop, 0, 'SIGTERM after many SIGHUPs: exit 0');

# --- secrets from the environment are kept ---
{
	my $le = ProvisionTest::start_listener(node => $node, secrets => [$old], secret_env => 1);
	my $from = $le->log_size;
	$le->signal('HUP');
	like($le->wait_for_log(qr/[^\n]*SIGHUP[^\n]*/, $from) // '',
		qr/came from the environment.*nothing reloaded/, 'environment secrets: nothing to re-read');
	is($le->callback($hb, secret => $old)->{status}, 200, 'environment secrets: still verify');
	ok($le->running, 'environment secrets: still running');
	is($le->stop, 0, 'environment listener exits 0');
}

done_testing();
