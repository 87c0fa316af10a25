=pod

=head1 NAME

FakeGitHub - GitHub's REST API as the dispatcher uses it, on 127.0.0.1

=head1 SYNOPSIS

  use FakeGitHub;

  my $gh = FakeGitHub->new(tokens => ['ghp_test']);      # or app => {...}, tls => 1
  $gh->script({ endpoint => 'dispatch', status => 500, times => 2 });
  ... run the dispatcher with --api $gh->url ...
  my @calls = $gh->requests(endpoint => 'dispatch');
  is($calls[0]{json}{inputs}{job_id}, $job);
  my @runs = $gh->runs;
  $gh->stop;

=head1 DESCRIPTION

A forked HTTP::Daemon serving the three endpoints of the dispatcher:

=over

=item POST /repos/OWNER/NAME/actions/workflows/WORKFLOW/dispatches

Checks the bearer token, the repository and workflow, and the JSON body
(C<ref>, C<inputs.job_id>, C<inputs.agent_id>). Creates a run whose
C<display_title> is C<run_title> with C<{job_id}> replaced (the example
workflow's C<run-name>) and answers 200 with C<workflow_run_id>,
C<run_url> and C<html_url> when C<return_run_details> is true, 204
otherwise. With C<< run_details => 'refuse' >> (a GitHub Enterprise Server
that predates the parameter) a body holding C<return_run_details> gets 422
naming it; with C<< run_details => 'ignore' >> it gets 204.

=item GET /repos/OWNER/NAME/actions/workflows/WORKFLOW/runs

The runs created so far, newest first, filtered by C<event> and
C<created=E<gt>=TIME>, paged by C<per_page> and C<page>.

=item POST /app/installations/ID/access_tokens

Verifies the App's JWT: RS256 signature with the App's public key, C<iat>
between 70 and 50 seconds in the past, C<exp> after now and at most 600
seconds after C<iat>, C<iss> the App id. Answers 201 with a fresh token
valid for C<< app => { token_lifetime } >> seconds (default 3600), or 401
with the reason.

=back

Every request is recorded (method, path, query, lower-cased headers, body,
decoded JSON, and for the token endpoint the JWT check) with the time it
arrived and the status it got. C<script> queues answers that override the
default for an endpoint: a status, headers and a body, a delay, a hang
until the client goes away, and whether a dispatch still creates a run
(an answer lost on the way back).

Each connection is served by its own process, so several dispatchers can
talk to it at once; the state lives in files under a lock.

With C<actions> (see the constructor) the fake also does what GitHub
Actions would: every run it creates plays the workflow file's job, its
steps' C<run:> scripts started with the dispatch's inputs (L</THE RUNNER>).

=cut

package FakeGitHub;

use strict;
use warnings;

use Carp;
use Crypt::OpenSSL::RSA;
use Fcntl qw(:flock);
use File::Path ();
use HTTP::Daemon;
use HTTP::Response;
use IO::Select;
use IO::Socket::SSL;
use JSON::PP ();
use MIME::Base64 qw(decode_base64);
use POSIX ();
use Time::HiRes qw(time sleep);
use URI;
use URI::QueryParam;

use PostgreSQL::Test::Utils ();

my $json = JSON::PP->new->utf8->canonical->allow_nonref;
my @running;
my $parent_pid = $$;

=pod

=head1 CONSTRUCTOR

=over

=item new(%opts)

C<repo> (default C<acme/agents>), C<workflow> (C<provision.yml>),
C<tokens> (array ref of valid bearer tokens), C<app> (hash ref: C<id>,
C<installation>, C<public_key> PEM, C<token_lifetime>), C<run_title>
(default C<provision {job_id}>, or the C<run-name> of C<actions>'s
workflow), C<run_details> (C<answer>, C<refuse> or C<ignore>), C<tls>
(serve HTTPS with a certificate from a test CA made with openssl;
C<ca_file> is then the CA to trust), C<actions> (hash ref: run the
workflow for every run, see L</THE RUNNER>).

=back

=cut

sub new
{
	my ($class, %opts) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $self = bless {
		dir         => $dir,
		repo        => $opts{repo} // 'acme/agents',
		workflow    => $opts{workflow} // 'provision.yml',
		tls         => $opts{tls} ? 1 : 0,
	}, $class;
	$self->_make_certificates if $self->{tls};
	my $actions = $opts{actions} ? _load_workflow($opts{actions}) : undef;

	$self->_write_state({
		tokens      => { map { $_ => 0 } @{ $opts{tokens} // [] } },
		app         => $opts{app},
		run_title   => $opts{run_title} // ($actions && $actions->{run_title}) // 'provision {job_id}',
		hold_runs   => $actions && $actions->{hold} ? 1 : 0,
		run_details => $opts{run_details} // 'answer',
		script      => [],
		runs        => [],
		next_run    => 1000000001,
		seq         => 0,
	});
	open(my $fh, '>', "$dir/requests.jsonl") or croak "$dir/requests.jsonl: $!";
	close $fh;

	my $d = HTTP::Daemon->new(LocalAddr => '127.0.0.1', LocalPort => 0, ReuseAddr => 1,
		Listen => 64)
	  or croak "cannot listen: $!";
	$self->{port} = $d->sockport;
	my $pid = fork();
	croak "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		# Its own process group, so that stop() ends the connections too;
		# and never back into the test script, whatever happens.
		POSIX::setpgid(0, 0);
		$SIG{CHLD} = 'IGNORE';
		$SIG{TERM} = sub { POSIX::_exit(0) };
		eval { $self->_serve($d) };
		print STDERR "FakeGitHub server: $@" if $@;
		POSIX::_exit(0);
	}
	POSIX::setpgid($pid, $pid);    # also here: whichever runs first
	close $d;
	$self->{pid} = $pid;
	push @running, $self;
	$self->_start_runner($actions) if $actions;
	return $self;
}

=pod

=head1 METHODS

=over

=item url, port, ca_file, pid

The base URL (C<http://127.0.0.1:PORT> or C<https://...>) to pass as
C<--api>, its port, the test CA's file (with C<tls>) and the server's
process id.

=cut

sub url     { my $s = shift; return ($s->{tls} ? 'https' : 'http') . "://127.0.0.1:$s->{port}"; }
sub port    { return $_[0]{port}; }
sub ca_file { return $_[0]{ca_file}; }
sub pid     { return $_[0]{pid}; }

=pod

=item script(@answers)

Queues answers, each a hash ref: C<endpoint> (C<dispatch>, C<runs>,
C<token>), C<status> (without one the usual answer is given, after the
C<delay>), C<body> (a hash ref is sent as JSON, a string as
is), C<headers> (hash ref), C<delay> (seconds before answering), C<hang>
(never answer; the connection's process waits until the client goes away
or C<hang> seconds pass), C<create_run> (a dispatch creates its run
although the answer says otherwise), C<times> (how many requests it
answers, default 1). The first queued answer for the endpoint is used.

=item clear_script

Drops the queued answers.

=cut

sub script
{
	my ($self, @answers) = @_;
	$self->_update(sub {
		my ($s) = @_;
		for my $a (@answers)
		{
			croak "script entry needs an endpoint" unless $a->{endpoint};
			push @{ $s->{script} }, { times => 1, %$a };
		}
	});
}

sub clear_script { $_[0]->_update(sub { $_[0]{script} = [] }); }

=pod

=item set(%settings)

Changes C<tokens> (array ref), C<run_details> or C<run_title> of the
running server.

=cut

sub set
{
	my ($self, %opts) = @_;
	$self->_update(sub {
		my ($s) = @_;
		$s->{tokens} = { map { $_ => 0 } @{ $opts{tokens} } } if $opts{tokens};
		$s->{run_details} = $opts{run_details} if $opts{run_details};
		$s->{run_title} = $opts{run_title} if $opts{run_title};
	});
}

=pod

=item requests(%filter)

The recorded requests, oldest first, optionally only those of
C<endpoint>. Each is a hash ref: C<seq>, C<time>, C<endpoint>, C<method>,
C<path>, C<query> (hash ref), C<headers> (lower-cased names), C<body>,
C<json>, C<status> (what it was answered, absent while it hangs), C<jwt>
(token endpoint: C<valid>, C<error>, C<claims>, C<header>).

=cut

sub requests
{
	my ($self, %filter) = @_;
	open(my $fh, '<', "$self->{dir}/requests.jsonl") or croak "requests.jsonl: $!";
	flock($fh, LOCK_SH);
	my %by_seq;
	while (my $line = <$fh>)
	{
		my $r = $json->decode($line);
		# a request is written when it arrives and again with its status
		$by_seq{ $r->{seq} } = { %{ $by_seq{ $r->{seq} } // {} }, %$r };
	}
	close $fh;
	my @all = map { $by_seq{$_} } sort { $a <=> $b } keys %by_seq;
	@all = grep { $_->{endpoint} eq $filter{endpoint} } @all if $filter{endpoint};
	return @all;
}

=pod

=item wait_requests($n, %opts)

Waits until at least C<$n> requests (of C<endpoint>, and answered unless
C<answered =E<gt> 0>) were recorded; returns them.

=cut

sub wait_requests
{
	my ($self, $n, %opts) = @_;
	my @r;
	ProvisionTest::wait_until(sub {
		@r = $self->requests(endpoint => $opts{endpoint});
		@r = grep { defined $_->{status} } @r unless defined $opts{answered} && !$opts{answered};
		return @r >= $n;
	}, timeout => $opts{timeout});
	return @r;
}

=pod

=item runs

The runs created so far, oldest first: C<id>, C<display_title>,
C<job_id>, C<inputs> (the dispatch's), C<created_at> (ISO 8601),
C<created> (epoch), C<html_url>, C<status> (C<queued>, and with
C<actions> C<in_progress> and C<completed>), and once completed
C<conclusion> and C<steps> (L</THE RUNNER>).

=item add_run(job_id => $id, created => $epoch, inputs => \%inputs)

Creates a run as a dispatch would have (for reconciliation tests).

=cut

sub runs { return @{ $_[0]->_read_state->{runs} }; }

sub add_run
{
	my ($self, %opts) = @_;
	my $run;
	$self->_update(sub {
		$run = _new_run($_[0], { job_id => $opts{job_id}, %{ $opts{inputs} // {} } },
			$opts{created} // time());
	});
	return $run;
}

=pod

=item stop

Stops the server and the runner, killing the runs in progress (also done
at exit).

=back

=cut

sub stop
{
	my ($self) = @_;
	if ($self->{runner})
	{
		kill 'TERM', $self->{runner};
		waitpid($self->{runner}, 0);
		delete $self->{runner};
	}
	return unless $self->{pid};
	kill 'TERM', -$self->{pid};
	kill 'TERM', $self->{pid};
	waitpid($self->{pid}, 0);
	delete $self->{pid};
}

END
{
	my $code = $?;
	if ($$ == $parent_pid)
	{
		$_->stop for @running;
	}
	$? = $code;
}

# ---- state, shared by the connection processes ----------------------------

sub _read_state
{
	my ($self) = @_;
	open(my $lock, '>>', "$self->{dir}/lock") or croak "lock: $!";
	flock($lock, LOCK_SH);
	my $s = _load("$self->{dir}/state.json");
	close $lock;
	return $s;
}

sub _load
{
	my ($path) = @_;
	open(my $fh, '<', $path) or croak "$path: $!";
	local $/;
	my $s = $json->decode(<$fh>);
	close $fh;
	return $s;
}

sub _write_state
{
	my ($self, $s) = @_;
	my $tmp = "$self->{dir}/state.json.$$";
	open(my $fh, '>', $tmp) or croak "$tmp: $!";
	print $fh $json->encode($s);
	close $fh or croak "$tmp: $!";
	rename($tmp, "$self->{dir}/state.json") or croak "rename: $!";
}

# Runs $code on the state under the exclusive lock and saves it.
sub _update
{
	my ($self, $code) = @_;
	open(my $lock, '>>', "$self->{dir}/lock") or croak "lock: $!";
	flock($lock, LOCK_EX);
	my $s = _load("$self->{dir}/state.json");
	my @r = $code->($s);
	$self->_write_state($s);
	close $lock;
	return wantarray ? @r : $r[0];
}

sub _record
{
	my ($self, $r) = @_;
	open(my $fh, '>>', "$self->{dir}/requests.jsonl") or die "requests.jsonl: $!";
	flock($fh, LOCK_EX);
	print $fh $json->encode($r) . "\n";
	close $fh;
}

sub _iso
{
	my ($t) = @_;
	return POSIX::strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(int($t)));
}

sub _new_run
{
	my ($s, $inputs, $created) = @_;
	my $job_id = $inputs->{job_id};
	my $id = $s->{next_run}++;
	(my $title = $s->{run_title}) =~ s/\{job_id\}/$job_id/g;
	my $run = {
		id            => $id,
		name          => 'provision',
		display_title => $title,
		job_id        => $job_id,
		inputs        => $inputs,
		event         => 'workflow_dispatch',
		status        => 'queued',
		created       => $created,
		created_at    => _iso($created),
		html_url      => "https://github.example/acme/agents/actions/runs/$id",
		url           => "https://api.github.example/repos/acme/agents/actions/runs/$id",
	};
	push @{ $s->{runs} }, $run;
	return $run;
}

# ---- TLS ---------------------------------------------------------------------

sub _make_certificates
{
	my ($self) = @_;
	my $d = $self->{dir};
	my $conf = "$d/server.ext";
	open(my $fh, '>', $conf) or croak "$conf: $!";
	print $fh "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
	  . "basicConstraints = CA:FALSE\nkeyUsage = digitalSignature, keyEncipherment\n"
	  . "extendedKeyUsage = serverAuth\n";
	close $fh;
	for my $cmd (
		"openssl req -x509 -newkey rsa:2048 -nodes -keyout $d/ca.key -out $d/ca.pem -days 2 "
		. "-subj '/CN=provision test CA'",
		"openssl req -newkey rsa:2048 -nodes -keyout $d/server.key -out $d/server.csr "
		. "-subj '/CN=127.0.0.1'",
		"openssl x509 -req -in $d/server.csr -CA $d/ca.pem -CAkey $d/ca.key "
		. "-CAcreateserial -out $d/server.pem -days 2 -extfile $conf")
	{
		system("$cmd >$d/openssl.log 2>&1") == 0
		  or croak "openssl failed: $cmd\n" . do { local (@ARGV, $/) = ("$d/openssl.log"); <> };
	}
	$self->{ca_file} = "$d/ca.pem";
}

# ---- the server ----------------------------------------------------------------

sub _serve
{
	my ($self, $d) = @_;
	while (1)
	{
		my $c = $d->accept or next;
		my $pid = fork();
		if (!defined $pid)
		{
			close $c;
			next;
		}
		if ($pid == 0)
		{
			# $d stays open: HTTP::Daemon asks it for its address
			eval { $self->_connection($c) };
			print STDERR "FakeGitHub connection: $@" if $@ && -d $self->{dir};
			POSIX::_exit(0);
		}
		close $c;
	}
}

sub _connection
{
	my ($self, $c) = @_;
	if ($self->{tls})
	{
		IO::Socket::SSL->start_SSL($c,
			SSL_server    => 1,
			SSL_cert_file => "$self->{dir}/server.pem",
			SSL_key_file  => "$self->{dir}/server.key")
		  or return;    # the client refused the certificate: nothing to serve
		bless $c, 'FakeGitHub::TLSConnection';
	}
	while (my $req = $c->get_request)
	{
		my $res = $self->_handle($c, $req);
		return unless $res;    # hung until the client left
		$c->send_response($res);
	}
}

sub _answer
{
	my ($status, $body, %headers) = @_;
	my $res = HTTP::Response->new($status);
	$res->header('Content-Type' => 'application/json; charset=utf-8');
	$res->header(%headers) if %headers;
	if (defined $body)
	{
		$res->content(ref $body ? $json->encode($body) : $body);
	}
	return $res;
}

sub _b64url_decode
{
	my ($s) = @_;
	return undef unless defined $s && $s =~ /^[A-Za-z0-9_-]*$/;
	$s =~ tr{-_}{+/};
	$s .= '=' x ((4 - length($s) % 4) % 4);
	return decode_base64($s);
}

# The checks GitHub makes of an App's JWT.
sub _check_jwt
{
	my ($app, $jwt) = @_;
	my ($h, $p, $sig) = split /\./, $jwt // '', -1;
	return { valid => 0, error => 'not a JWT' } unless defined $sig;
	my $header = eval { $json->decode(_b64url_decode($h)) };
	my $claims = eval { $json->decode(_b64url_decode($p)) };
	return { valid => 0, error => 'A JSON web token could not be decoded' }
	  unless ref $header eq 'HASH' && ref $claims eq 'HASH';
	my %r = (header => $header, claims => $claims, valid => 0);
	return { %r, error => "alg is not RS256" } unless ($header->{alg} // '') eq 'RS256';
	my $rsa = Crypt::OpenSSL::RSA->new_public_key($app->{public_key});
	$rsa->use_sha256_hash;
	my $raw = _b64url_decode($sig);
	return { %r, error => 'signature is not base64url' } unless defined $raw;
	return { %r, error => 'signature does not verify' }
	  unless eval { $rsa->verify("$h.$p", $raw) };
	my $now = time();
	my ($iat, $exp, $iss) = @$claims{qw(iat exp iss)};
	return { %r, error => "'Issued at' claim ('iat') missing" } unless defined $iat && $iat =~ /^\d+$/;
	return { %r, error => "'Expiration time' claim ('exp') missing" } unless defined $exp && $exp =~ /^\d+$/;
	return { %r, error => "'Issued at' claim ('iat') must be 50 to 70 seconds in the past (is "
		  . int($now - $iat) . ')' }
	  unless $now - $iat >= 50 && $now - $iat <= 70;
	return { %r, error => "'Expiration time' claim ('exp') is too far in the future" }
	  if $exp - $iat > 600;
	return { %r, error => "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires" }
	  if $exp <= $now;
	return { %r, error => "'Issuer' claim ('iss') must be the App id" }
	  unless defined $iss && "$iss" eq "$app->{id}";
	return { %r, error => "'Issuer' claim ('iss') must be a JSON number for an App id" }
	  if $json->encode($iss) =~ /^"/;
	return { %r, valid => 1 };
}

sub _handle
{
	my ($self, $c, $req) = @_;
	my $uri = URI->new($req->uri);
	my $path = $uri->path;
	my %query = map { $_ => scalar $uri->query_param($_) } $uri->query_param;
	my %headers;
	$req->headers->scan(sub { $headers{ lc $_[0] } = $_[1] });
	my $body = $req->content;
	my $decoded = eval { $json->decode($body) };
	my ($repo, $wf) = @$self{qw(repo workflow)};

	my $endpoint =
	    $path =~ m{^/repos/([^/]+/[^/]+)/actions/workflows/([^/]+)/dispatches$} && $req->method eq 'POST' ? 'dispatch'
	  : $path =~ m{^/repos/([^/]+/[^/]+)/actions/workflows/([^/]+)/runs$} && $req->method eq 'GET' ? 'runs'
	  : $path =~ m{^/app/installations/(\d+)/access_tokens$} && $req->method eq 'POST' ? 'token'
	  :                                                                                   'other';
	my ($path_repo, $path_wf) = ($1, $2);

	# one step under the lock: the sequence number, the scripted answer, the state
	my ($seq, $entry, $state) = $self->_update(sub {
		my ($s) = @_;
		my $n = ++$s->{seq};
		my $found;
		for my $e (@{ $s->{script} })
		{
			next unless $e->{endpoint} eq $endpoint && $e->{times} > 0;
			$e->{times}--;
			$found = {%$e};
			last;
		}
		@{ $s->{script} } = grep { $_->{times} > 0 } @{ $s->{script} };
		return ($n, $found, $s);
	});
	my %rec = (
		seq      => $seq,
		time     => time(),
		endpoint => $endpoint,
		method   => $req->method,
		path     => $path,
		query    => \%query,
		headers  => \%headers,
		body     => $body,
		json     => $decoded,
	);

	my $auth = $headers{authorization} // '';
	my ($bearer) = $auth =~ /^Bearer (\S+)$/;
	if ($endpoint eq 'token' && $state->{app})
	{
		$rec{jwt} = _check_jwt($state->{app}, $bearer);
	}
	$self->_record(\%rec);

	my $res;
	if ($entry)
	{
		if ($entry->{create_run} && $endpoint eq 'dispatch')
		{
			$self->_update(sub { _new_run($_[0], $decoded->{inputs} // {}, time()) });
		}
		sleep($entry->{delay}) if $entry->{delay};
		if ($entry->{hang})
		{
			# until the client goes away (its socket reads EOF) or the time is up
			my $sel = IO::Select->new($c);
			my $until = time() + ($entry->{hang} > 1 ? $entry->{hang} : 120);
			while (time() < $until)
			{
				if ($sel->can_read(0.1))
				{
					my $n = sysread($c, my $buf, 1);
					last unless $n;
				}
			}
			$self->_record({ seq => $seq, hung => 1 });
			return undef;
		}
		$res = _answer($entry->{status}, $entry->{body}, %{ $entry->{headers} // {} })
		  if defined $entry->{status};
	}
	# no status scripted (only a delay): the usual answer, from the state as it is now
	$res //= $self->_default($endpoint, $self->_read_state, $bearer, \%rec, $path_repo, $path_wf);
	$self->_record({ seq => $seq, status => $res->code });
	return $res;
}

sub _token_valid
{
	my ($state, $bearer) = @_;
	return 0 unless defined $bearer && exists $state->{tokens}{$bearer};
	my $expires = $state->{tokens}{$bearer};
	return $expires == 0 || $expires > time();
}

sub _default
{
	my ($self, $endpoint, $state, $bearer, $rec, $path_repo, $path_wf) = @_;
	my $not_found = {
		message           => 'Not Found',
		documentation_url => 'https://docs.github.com/rest',
		status            => '404'
	};
	my $bad_credentials = {
		message           => 'Bad credentials',
		documentation_url => 'https://docs.github.com/rest',
		status            => '401'
	};

	if ($endpoint eq 'token')
	{
		my $app = $state->{app} or return _answer(404, $not_found);
		return _answer(401, { message => $rec->{jwt}{error} }) unless $rec->{jwt}{valid};
		my ($inst) = $rec->{path} =~ m{/app/installations/(\d+)/};
		return _answer(404, $not_found) unless $inst eq "$app->{installation}";
		my $lifetime = $app->{token_lifetime} // 3600;
		my $token = sprintf('ghs_%d_%08x', $rec->{seq}, int(rand(2**32)));
		my $expires = time() + $lifetime;
		$self->_update(sub { $_[0]{tokens}{$token} = $expires });
		return _answer(201, {
			token       => $token,
			expires_at  => _iso($expires),
			permissions => { actions => 'write' }
		});
	}
	return _answer(404, $not_found) if $endpoint eq 'other';
	return _answer(401, $bad_credentials) unless _token_valid($state, $bearer);
	return _answer(404, $not_found)
	  unless $path_repo eq $self->{repo} && $path_wf eq $self->{workflow};

	if ($endpoint eq 'dispatch')
	{
		my $b = $rec->{json};
		return _answer(400, { message => 'Problems parsing JSON' }) unless ref $b eq 'HASH';
		return _answer(422, { message => 'Invalid request.\n\n"ref" wasn\'t supplied.' })
		  unless defined $b->{ref};
		return _answer(422, { message => "No ref found for: $b->{ref}" })
		  unless $b->{ref} eq 'main' || $b->{ref} =~ /^v\d/;
		my $inputs = $b->{inputs} // {};
		return _answer(422, { message => 'Required input \'job_id\' not provided' })
		  unless defined $inputs->{job_id};
		my @extra = grep { $_ ne 'job_id' && $_ ne 'agent_id' } sort keys %$inputs;
		return _answer(422, { message => 'Unexpected inputs provided: ' . $json->encode(\@extra) })
		  if @extra;
		if (exists $b->{return_run_details} && $state->{run_details} eq 'refuse')
		{
			return _answer(422, {
				message => "Invalid request.\n\n\"return_run_details\" is not a permitted key.",
				documentation_url => 'https://docs.github.com/enterprise-server@3.14/rest'
			});
		}
		my $run;
		$self->_update(sub { $run = _new_run($_[0], $inputs, time()) });
		if ($b->{return_run_details} && $state->{run_details} eq 'answer')
		{
			return _answer(200, {
				workflow_run_id => $run->{id},
				run_url         => $run->{url},
				html_url        => $run->{html_url},
			});
		}
		my $res = HTTP::Response->new(204);
		return $res;
	}

	# runs: newest first, filtered and paged as GitHub does
	my %q = %{ $rec->{query} };
	my @runs = reverse @{ $self->_read_state->{runs} };
	@runs = grep { $_->{event} eq $q{event} } @runs if defined $q{event};
	if (defined $q{created} && $q{created} =~ /^>=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)$/)
	{
		my $since = $1;
		@runs = grep { $_->{created_at} ge $since } @runs;
	}
	my $per_page = $q{per_page} // 30;
	my $page = $q{page} // 1;
	my @slice = grep { defined } @runs[ ($page - 1) * $per_page .. $page * $per_page - 1 ];
	return _answer(200, { total_count => scalar @runs, workflow_runs => \@slice });
}

# ---- the runner ----------------------------------------------------------------

=pod

=head1 THE RUNNER

  my $gh = FakeGitHub->new(tokens => [...], actions => {
      workflow  => "$root/examples/github-actions/provision.yml",
      workspace => $root,                  # the checkout the steps run in
      secrets   => { HCLOUD_TOKEN => ..., ... },
      vars      => { HCLOUD_LOCATION => 'nbg1' },
      env       => { PATH => ..., HCLOUD_API => $cloud->url },
      hold      => 1,                      # runs wait for release_runs
  });
  my @runs = $gh->wait_runs(1);            # completed runs
  print $gh->step_log($runs[0], 'Provision');

With C<actions> a process next to the server plays GitHub Actions for
every run the fake creates (a dispatch, a scripted C<create_run>,
C<add_run>), as a hosted runner would once the run is picked up: the
workflow file's one job, step by step, in C<workspace>:

=over

=item *

C<run:> is written to a file and run with C<bash --noprofile --norc -eo
pipefail>, GitHub's default shell, its stdout and stderr kept per step.
C<uses: actions/checkout@...> does nothing (C<workspace> is the checkout);
any other action fails its step.

=item *

A step's environment is the runner's (C<env>, else C<PATH>, C<HOME> and
C<TMPDIR> of the test), the variables GitHub sets (C<CI>,
C<GITHUB_ACTIONS>, C<GITHUB_RUN_ID> and C<GITHUB_RUN_ATTEMPT> (1) of the
run, C<GITHUB_REPOSITORY>, C<GITHUB_SERVER_URL>
(C<https://github.example>, the host of the runs' C<html_url>),
C<GITHUB_EVENT_NAME>, C<GITHUB_REF>, C<GITHUB_WORKSPACE>, C<RUNNER_TEMP>
(one directory per run), C<GITHUB_OUTPUT> and C<GITHUB_STEP_SUMMARY> (one
file per step)), then the job's C<env:> and the step's C<env:>.

=item *

C<${{ ... }}> in C<env:> values, in C<run:> and in C<run-name> and the
C<concurrency> group may be C<inputs.NAME> (the dispatch's inputs),
C<secrets.NAME> and C<vars.NAME> (empty when not given), C<job.status>,
C<github.run_id> or C<github.run_attempt>; anything else fails the step.
C<if:> may combine C<success()>, C<failure()>, C<always()> and
C<cancelled()> with C<||>, C<&&>, C<!> and parentheses (default
C<success()>).

=item *

Runs of one C<concurrency> group run one at a time, oldest first (a later
run waits, as with C<cancel-in-progress: false>; GitHub's replacement of
a waiting run by a newer one is not played). C<timeout-minutes>,
C<permissions>, C<runs-on> and cancellation are not played.

=back

A run goes C<queued>, C<in_progress>, C<completed>; its C<conclusion> is
C<success> unless a step failed (C<failure>), and C<steps> lists each
step's C<name>, C<conclusion> (C<success>, C<failure>, C<skipped>),
C<exit> status, C<outputs> (the C<NAME=value> lines of its
C<GITHUB_OUTPUT>), C<error> (why the runner failed it, if it did) and
the files C<stdout> and C<stderr>.

=over

=item hold_runs, release_runs

Runs stay queued (no runner is free) until C<release_runs>; C<hold> in
C<actions> starts held.

=item wait_runs($n, %opts)

Waits (C<timeout>, default C<ProvisionTest::timeout()>) until at least
C<$n> runs completed; returns the completed runs, oldest first.

=item step_log($run, $step_name)

The step's stdout followed by its stderr. While a run is in progress,
C<steps> holds the steps started so far, the one running without a
C<conclusion>.

=back

=cut

sub hold_runs    { $_[0]->_update(sub { $_[0]{hold_runs} = 1 }); }
sub release_runs { $_[0]->_update(sub { $_[0]{hold_runs} = 0 }); }

sub wait_runs
{
	my ($self, $n, %opts) = @_;
	my @done;
	ProvisionTest::wait_until(sub {
		@done = grep { $_->{status} eq 'completed' } $self->runs;
		return @done >= $n;
	}, timeout => $opts{timeout});
	return @done;
}

sub step_log
{
	my ($self, $run, $name) = @_;
	my ($step) = grep { $_->{name} eq $name } @{ $run->{steps} // [] };
	return undef unless $step;
	my $text = '';
	for my $f (grep { defined } @$step{qw(stdout stderr)})
	{
		open(my $fh, '<', $f) or next;
		local $/;
		$text .= <$fh> // '';
		close $fh;
	}
	return $text;
}

# The workflow file read once: its job's steps and env, run-name and
# concurrency group, checked for what the runner can play.
sub _load_workflow
{
	my ($a) = @_;
	require YAML::XS;
	my $doc = YAML::XS::LoadFile($a->{workflow});
	croak "$a->{workflow}: not a workflow" unless ref $doc eq 'HASH' && ref $doc->{jobs} eq 'HASH';
	my @jobs = sort keys %{ $doc->{jobs} };
	croak "$a->{workflow}: the runner plays one job, not " . scalar(@jobs) unless @jobs == 1;
	my $job = $doc->{jobs}{ $jobs[0] };
	croak "$a->{workflow}: job $jobs[0] has no steps" unless ref $job->{steps} eq 'ARRAY';
	my $concurrency = $job->{concurrency} // $doc->{concurrency};
	$concurrency = $concurrency->{group} if ref $concurrency eq 'HASH';
	my $title;
	if (defined $doc->{'run-name'})
	{
		($title = $doc->{'run-name'}) =~ s/\$\{\{\s*inputs\.job_id\s*\}\}/{job_id}/g;
		croak "$a->{workflow}: run-name may only use inputs.job_id here" if $title =~ /\$\{\{/;
	}
	my %env = %{ $a->{env} // { map { defined $ENV{$_} ? ($_ => $ENV{$_}) : () } qw(PATH HOME TMPDIR) } };
	return {
		%$a,
		env         => \%env,
		job_env     => $job->{env} // {},
		steps       => $job->{steps},
		concurrency => $concurrency,
		run_title   => $title,
	};
}

# ${{ ... }} of a string, for a run; dies naming what it cannot evaluate.
sub _expand
{
	my ($a, $run, $status, $text) = @_;
	return $text unless defined $text;
	$text =~ s{\$\{\{\s*(.*?)\s*\}\}}{
		my $e = $1;
		  $e =~ /^inputs\.(\w+)$/   ? $run->{inputs}{$1} // ''
		: $e =~ /^secrets\.(\w+)$/  ? $a->{secrets}{$1} // ''
		: $e =~ /^vars\.(\w+)$/     ? $a->{vars}{$1} // ''
		: $e eq 'job.status'        ? $status
		: $e eq 'github.run_id'     ? $run->{id}
		: $e eq 'github.run_attempt' ? 1
		: die "the runner cannot evaluate \${{ $e }}\n"
	}ge;
	return $text;
}

# A step's if: with the job's status so far.
sub _condition
{
	my ($expr, $status) = @_;
	$expr //= 'success()';
	$expr =~ s/^\$\{\{\s*(.*?)\s*\}\}$/$1/;
	my %f = (success => $status eq 'success', failure => $status eq 'failure',
		always => 1, cancelled => 0);
	(my $e = $expr) =~ s/\b(success|failure|always|cancelled)\(\)/$f{$1} ? 1 : 0/ge;
	die "the runner cannot evaluate if: $expr\n" unless $e =~ /^[01|&!()\s]*$/;
	my $v = eval $e;
	die "the runner cannot evaluate if: $expr\n" if $@;
	return $v;
}

sub _group
{
	my ($a, $run) = @_;
	return "run $run->{id}" unless defined $a->{concurrency};
	my $g = eval { _expand($a, $run, 'success', $a->{concurrency}) };
	return defined $g ? "group $g" : "run $run->{id}";
}

# The runner: a process of its own that starts the queued runs and plays
# each in a child, in a process group of its own so that stop ends its
# steps too.
sub _start_runner
{
	my ($self, $a) = @_;
	my $pid = fork();
	croak "fork: $!" unless defined $pid;
	if ($pid)
	{
		$self->{runner} = $pid;
		return;
	}
	my %playing;
	$SIG{TERM} = sub {
		kill 'KILL', -$_ for keys %playing;
		POSIX::_exit(0);
	};
	eval {
		while (1)
		{
			while ((my $done = waitpid(-1, POSIX::WNOHANG())) > 0)
			{
				delete $playing{$done};
			}
			my $s = $self->_read_state;
			if (!$s->{hold_runs} && grep { $_->{status} eq 'queued' } @{ $s->{runs} })
			{
				my @start = $self->_update(sub {
					my ($s) = @_;
					return () if $s->{hold_runs};
					my %busy = map { (_group($a, $_) => 1) }
					  grep { $_->{status} eq 'in_progress' } @{ $s->{runs} };
					my @go;
					for my $run (@{ $s->{runs} })
					{
						next unless $run->{status} eq 'queued';
						my $g = _group($a, $run);
						next if $busy{$g}++;
						$run->{status} = 'in_progress';
						$run->{started} = time();
						push @go, {%$run};
					}
					return @go;
				});
				for my $run (@start)
				{
					my $child = fork();
					die "fork: $!" unless defined $child;
					if ($child == 0)
					{
						POSIX::setpgid(0, 0);
						$SIG{TERM} = 'DEFAULT';
						eval { $self->_play($a, $run) };
						print STDERR "FakeGitHub runner, run $run->{id}: $@" if $@;
						POSIX::_exit(0);
					}
					POSIX::setpgid($child, $child);
					$playing{$child} = $run->{id};
				}
			}
			sleep(0.1);
		}
	};
	print STDERR "FakeGitHub runner: $@" if $@;
	POSIX::_exit(1);
}

# One run, step by step; each step's outcome goes into the run's record as
# it ends, the run's at the end.
sub _play
{
	my ($self, $a, $run) = @_;
	my $dir = "$self->{dir}/runs/$run->{id}";
	File::Path::make_path("$dir/temp");
	my $status = 'success';
	my @steps;
	my $n = 0;
	my $save = sub {
		my (%done) = @_;
		$self->_update(sub {
			my ($r) = grep { $_->{id} == $run->{id} } @{ $_[0]{runs} };
			%$r = (%$r, steps => \@steps, %done);
		});
	};
	for my $step (@{ $a->{steps} })
	{
		$n++;
		my $name = $step->{name} // ($step->{uses} ? "Run $step->{uses}" : "step $n");
		my %rec = (name => $name);
		push @steps, \%rec;
		my $run_it = eval { _condition($step->{if}, $status) };
		if ($@)
		{
			@rec{qw(conclusion error)} = ('failure', $@);
		}
		elsif (!$run_it)
		{
			$rec{conclusion} = 'skipped';
		}
		else
		{
			# visible while it runs, without a conclusion yet
			@rec{qw(stdout stderr)} = ("$dir/$n.stdout", "$dir/$n.stderr");
			$save->();
		}
		if (!defined $rec{conclusion}
			&& !eval { $self->_step($a, $run, $status, $step, $dir, $n, \%rec); 1 })
		{
			@rec{qw(conclusion error)} = ('failure', $@);
		}
		$status = 'failure' if $rec{conclusion} eq 'failure';
		$save->();
	}
	$save->(status => 'completed', conclusion => $status, completed => time());
}

sub _step
{
	my ($self, $a, $run, $status, $step, $dir, $n, $rec) = @_;
	if (defined $step->{uses})
	{
		die "the runner plays no action but actions/checkout ($step->{uses})\n"
		  unless $step->{uses} =~ m{^actions/checkout@};
		$rec->{conclusion} = 'success';
		return;
	}
	die "a step with neither run nor uses\n" unless defined $step->{run};
	my %env = (
		%{ $a->{env} },
		CI                  => 'true',
		GITHUB_ACTIONS      => 'true',
		GITHUB_RUN_ID       => $run->{id},
		GITHUB_RUN_ATTEMPT  => 1,
		GITHUB_REPOSITORY   => $self->{repo},
		GITHUB_SERVER_URL   => 'https://github.example',
		GITHUB_EVENT_NAME   => 'workflow_dispatch',
		GITHUB_REF          => 'refs/heads/main',
		GITHUB_WORKSPACE    => $a->{workspace},
		RUNNER_TEMP         => "$dir/temp",
		GITHUB_OUTPUT       => "$dir/$n.output",
		GITHUB_STEP_SUMMARY => "$dir/$n.summary",
	);
	for my $e ($a->{job_env}, $step->{env} // {})
	{
		$env{$_} = _expand($a, $run, $status, $e->{$_}) for keys %$e;
	}
	my $script = "$dir/$n.sh";
	open(my $fh, '>', $script) or die "$script: $!";
	print $fh _expand($a, $run, $status, $step->{run});
	close $fh or die "$script: $!";
	for my $f ("$dir/$n.output", "$dir/$n.summary")
	{
		open(my $t, '>', $f) or die "$f: $!";
		close $t;
	}

	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		# the environment is set here, never on a command line
		%ENV = %env;
		chdir $a->{workspace} or POSIX::_exit(127);
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>', $rec->{stdout});
		open(STDERR, '>', $rec->{stderr});
		exec('bash', '--noprofile', '--norc', '-eo', 'pipefail', $script) or POSIX::_exit(127);
	}
	waitpid($pid, 0);
	my $w = $?;
	$rec->{exit} = ($w & 127) ? 128 + ($w & 127) : $w >> 8;
	$rec->{conclusion} = $rec->{exit} == 0 ? 'success' : 'failure';
	my %out;
	if (open(my $o, '<', "$dir/$n.output"))
	{
		while (my $line = <$o>)
		{
			chomp $line;
			$out{$1} = $2 if $line =~ /^([A-Za-z_][\w-]*)=(.*)$/;
		}
		close $o;
	}
	$rec->{outputs} = \%out;
}

package FakeGitHub::TLSConnection;

# HTTP::Daemon's request parsing over IO::Socket::SSL's reads and writes.
our @ISA = ('IO::Socket::SSL', 'HTTP::Daemon::ClientConn');

1;
