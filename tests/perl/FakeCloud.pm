=pod

=head1 NAME

FakeCloud - fake Hetzner Cloud and Tailscale APIs, and a callback relay, for
the tests of the workflow scripts

=head1 SYNOPSIS

  use FakeCloud;

  my $fake = FakeCloud->start(
      hcloud_token  => $token,
      tailscale_key => $api_key,
      relay_to      => $listener->base_url,
      watch         => [ $token, $api_key, $webhook_secret ]);

  # the scripts' environment
  HCLOUD_API             => $fake->url,
  TAILSCALE_API          => $fake->url,
  PROVISION_CALLBACK_URL => $fake->url('/relay/webhooks/github'),

  $fake->configure(rules => [ { method => 'POST', path => '/v1/servers',
                                status => 500, apply => 1 } ]);
  my @calls = @{ $fake->calls };      # every request, in order
  my @servers = @{ $fake->servers };  # the servers that exist now

=head1 DESCRIPTION

One HTTP server on 127.0.0.1, in a child process, that answers the calls the
workflow scripts make, the way the real services answer them (status codes,
bodies, error shapes):

=over

=item Hetzner Cloud (C</v1/...>)

C<POST /v1/servers> (the name must be a unique RFC 1123 label, the labels
valid Hetzner labels, C<user_data> at most 32 KiB), C<GET /v1/servers> with
C<label_selector> (C<key=value> terms joined by commas) and C<name>,
C<GET /v1/servers/{id}>, C<DELETE /v1/servers/{id}>. A new server is
C<initializing>; it is C<running> after C<boot_polls> reads of it (default
1), never with C<never_boot>. C<Authorization: Bearer> must be the token.

=item The boot

When a server becomes C<running> the fake plays its cloud-init: the
C<user_data> must be C<#cloud-config> YAML whose C<write_files> puts the
Tailscale auth key in a file and whose C<runcmd> runs
C<tailscale up --auth-key=file:PATH --hostname=NAME>. If the key is one the
Tailscale API created, unexpired and unused, a device of that hostname joins
the tailnet (visible after C<join_polls> device listings, default 1; never
with C<never_join>). Anything else is recorded as a C<boot_error>.

=item Tailscale (C</api/v2/...>)

C<POST /api/v2/tailnet/-/keys> (an auth key), C<GET /api/v2/tailnet/-/devices>,
C<DELETE /api/v2/device/{id}>. C<Authorization: Bearer> must be the API key.

=item The callback relay (C</relay/PATH>)

Forwards a callback to C<relay_to> + C<PATH> (the real listener) with its
body and signature headers, and returns the listener's answer; a rule with
C<callback =E<gt> STATUS> answers instead for callbacks of that status.

=back

Every request is recorded (method, path, query, decoded JSON body, whether
the credentials were right, the answer's status, and for the relay the
signature headers, the raw body and the listener's answer). At each request the fake also reads the command line of
every process on the machine and records any C<watch>ed string found there:
a secret on a command line is a test failure.

=head2 Failure rules

C<configure(rules =E<gt> [...])> replaces the list of rules. The first rule
that matches a request answers it:

  method => 'POST', path => '/v1/servers'   exact path, or
  path_re => '^/v1/servers/\d+$'            a regular expression
  callback => 'running'                     relay only: the callback's status
  status => 503                             the answer's status
  body => {...}                             its JSON body (else a fitting error)
  close => 1                                close the connection, no answer
  apply => 1                                do the real work first (a created
                                            server exists, its answer is lost)
  times => N                                match N times only

=cut

package FakeCloud;

use strict;
use warnings;

use Carp;
use HTTP::Daemon;
use HTTP::Response;
use HTTP::Tiny;
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(time sleep);
use URI;
use YAML::XS ();

my $json = JSON::PP->new->utf8->canonical;
my @started;
my $parent_pid = $$;

=pod

=head1 METHODS

=over

=item start(%opts)

Starts the fake; options C<hcloud_token>, C<tailscale_key> (the credentials
it accepts), C<relay_to> (base URL of the listener), C<watch> (strings that
must never appear on a command line), and any of the settings of
C<configure>. Returns the object.

=cut

sub start
{
	my ($class, %opts) = @_;
	my $d = HTTP::Daemon->new(LocalAddr => '127.0.0.1', LocalPort => 0, ReuseAddr => 1)
	  or croak "HTTP::Daemon: $!";
	my $port = $d->sockport;
	my $pid = fork();
	croak "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		my $ok = eval { _serve($d, \%opts); 1 };
		print STDERR "fake cloud died: $@" unless $ok;
		POSIX::_exit($ok ? 0 : 1);
	}
	close $d;
	my $self = bless { pid => $pid, port => $port, http => HTTP::Tiny->new(timeout => 30) },
	  $class;
	push @started, $self;
	return $self;
}

=pod

=item url($path)

C<http://127.0.0.1:PORT> followed by C<$path>.

=item configure(%settings)

Changes settings of the running fake: C<rules>, C<boot_polls>,
C<never_boot>, C<join_polls>, C<never_join>, C<relay_to>. Settings not given
keep their values.

=item calls(), servers(), devices(), auth_keys()

Every request so far; the servers and tailnet devices that exist now; the
auth keys created (with C<used> and C<expires>, Unix seconds). Each an array
ref.

=item reset()

Forgets calls, servers, devices, keys and rules (not the credentials).

=item stop()

Stops the child process.

=back

=cut

sub url { return "http://127.0.0.1:$_[0]{port}" . ($_[1] // ''); }

sub _control
{
	my ($self, $method, $what, $data) = @_;
	my $r = $self->{http}->request($method, $self->url("/_fake/$what"),
		$data ? { content => $json->encode($data),
				  headers => { 'Content-Type' => 'application/json' } } : {});
	croak "fake cloud $method $what: $r->{status} $r->{content}" unless $r->{success};
	return $r->{content} eq '' ? undef : $json->decode($r->{content});
}

sub configure { my ($self, %s) = @_; return $self->_control('POST', 'config', \%s); }
sub calls     { return $_[0]->_control('GET', 'calls'); }
sub servers   { return $_[0]->_control('GET', 'servers'); }
sub devices   { return $_[0]->_control('GET', 'devices'); }
sub auth_keys { return $_[0]->_control("GET", "keys"); }
sub reset     { return $_[0]->_control('POST', 'reset', {}); }

sub stop
{
	my ($self) = @_;
	return unless $self->{pid};
	kill 'TERM', $self->{pid};
	waitpid($self->{pid}, 0);
	delete $self->{pid};
}

END
{
	my $code = $?;
	if ($$ == $parent_pid)
	{
		$_->stop for @started;
	}
	$? = $code;
}

# ---- the child ----------------------------------------------------------------

my %st;

sub _serve
{
	my ($d, $opts) = @_;
	%st = (
		hcloud_token  => $opts->{hcloud_token},
		tailscale_key => $opts->{tailscale_key},
		watch         => $opts->{watch} // [],
		next_id       => 41000001,
		next_ip       => 10,
	);
	_reset();
	_config($opts);
	$SIG{TERM} = sub { POSIX::_exit(0) };
	while (my $c = $d->accept)
	{
		$c->timeout(30);
		my $req = $c->get_request;
		if ($req)
		{
			my $resp = _handle($req, $c);
			if ($resp)
			{
				$resp->header(Connection => 'close');
				$c->send_response($resp);
			}
		}
		$c->close;
	}
}

sub _reset
{
	$st{calls}   = [];
	$st{servers} = {};
	$st{devices} = {};
	$st{keys}    = {};
	$st{rules}   = [];
	$st{boot_polls} = 1;
	$st{join_polls} = 1;
	$st{never_boot} = 0;
	$st{never_join} = 0;
}

sub _config
{
	my ($s) = @_;
	for my $k (qw(rules boot_polls never_boot join_polls never_join relay_to))
	{
		$st{$k} = $s->{$k} if exists $s->{$k};
	}
	$st{rules} = [ map { { %$_ } } @{ $st{rules} } ];
}

sub _json_response
{
	my ($status, $data) = @_;
	my $r = HTTP::Response->new($status);
	$r->header('Content-Type' => 'application/json');
	$r->content(defined $data ? $json->encode($data) : '');
	return $r;
}

sub _hcloud_error
{
	my ($status, $code, $message) = @_;
	return _json_response($status,
		{ error => { code => $code, message => $message, details => {} } });
}

# The error code Hetzner gives with a status.
sub _hcloud_code
{
	my ($status) = @_;
	my %codes = (401 => 'unauthorized', 403 => 'forbidden', 404 => 'not_found',
		409 => 'conflict', 412 => 'resource_unavailable', 422 => 'invalid_input',
		429 => 'rate_limit_exceeded');
	return $codes{$status} // ($status >= 500 ? 'server_error' : 'invalid_input');
}

sub _ts_error
{
	my ($status, $message) = @_;
	return _json_response($status, { message => $message });
}

# Secrets seen on any process's command line now.
sub _argv_leaks
{
	my @watch = grep { defined && length >= 8 } @{ $st{watch} },
	  map { $_->{key} } values %{ $st{keys} };
	return [] unless @watch;
	my @found;
	for my $f (glob '/proc/[0-9]*/cmdline')
	{
		open(my $fh, '<:raw', $f) or next;
		local $/;
		my $cmd = <$fh> // '';
		close $fh;
		for my $w (@watch)
		{
			next if index($cmd, $w) < 0;
			$cmd =~ s/\0/ /g;
			my ($pid) = $f =~ m{/proc/(\d+)/};
			push @found, "pid $pid: " . substr($cmd, 0, 200);
		}
	}
	return \@found;
}

sub _handle
{
	my ($req, $c) = @_;
	my $uri = URI->new($req->uri);
	my $path = $uri->path;
	my %q = $uri->query_form;
	my $method = $req->method;

	if ($path =~ m{^/_fake/(\w+)$})
	{
		return _control_request($method, $1, $req);
	}

	my $body;
	if (length($req->content // ''))
	{
		$body = eval { $json->decode($req->content) };
		$body = { _unparsed => $req->content } unless defined $body;
	}
	my %call = (
		method => $method,
		path   => $path,
		query  => \%q,
		body   => $body,
		leaks  => _argv_leaks(),
		at     => time(),
	);
	push @{ $st{calls} }, \%call;

	my $resp;
	if ($path =~ m{^/relay(/.*)$})
	{
		$resp = _relay($req, $1, $body, \%call);
	}
	else
	{
		$resp = _api($req, $method, $path, \%q, $body, \%call);
	}
	$call{status} = $resp ? $resp->code : 'closed';
	return $resp;
}

sub _control_request
{
	my ($method, $what, $req) = @_;
	if ($method eq 'GET' && $what eq 'calls')
	{
		return _json_response(200, $st{calls});
	}
	if ($method eq 'GET' && $what eq 'servers')
	{
		return _json_response(200, [ map { _server_json($st{servers}{$_}) } sort keys %{ $st{servers} } ]);
	}
	if ($method eq 'GET' && $what eq 'devices')
	{
		return _json_response(200, [ map { $st{devices}{$_} } sort keys %{ $st{devices} } ]);
	}
	if ($method eq 'GET' && $what eq 'keys')
	{
		return _json_response(200, [ map { $st{keys}{$_} } sort keys %{ $st{keys} } ]);
	}
	if ($method eq 'POST' && $what eq 'config')
	{
		_config($json->decode($req->content || '{}'));
		return _json_response(200, {});
	}
	if ($method eq 'POST' && $what eq 'reset')
	{
		_reset();
		return _json_response(200, {});
	}
	return _json_response(404, { message => "no control $method $what" });
}

# The first rule matching the request, consumed once if it counts.
sub _rule
{
	my ($method, $path, $callback_status) = @_;
	for my $r (@{ $st{rules} })
	{
		next if defined $r->{method} && $r->{method} ne $method;
		next if defined $r->{path} && $r->{path} ne $path;
		next if defined $r->{path_re} && $path !~ /$r->{path_re}/;
		next if defined $r->{callback} && ($callback_status // '') ne $r->{callback};
		next if defined $r->{times} && $r->{times} <= 0;
		$r->{times}-- if defined $r->{times};
		return $r;
	}
	return undef;
}

# The answer a rule gives: none (the connection closes), its body, or the
# error the service would send.
sub _rule_response
{
	my ($rule, $default) = @_;
	return undef if $rule->{close};
	return _json_response($rule->{status}, $rule->{body}) if $rule->{body};
	return $default;
}

# ---- the relay ------------------------------------------------------------------

sub _relay
{
	my ($req, $path, $body, $call) = @_;
	$call->{headers} = {
		map { my $v = $req->header($_); defined $v ? (lc($_) => $v) : () }
		  qw(Content-Type User-Agent webhook-id webhook-timestamp webhook-signature
		  X-Hub-Signature-256 X-GitHub-Delivery)
	};
	$call->{raw} = $req->content;
	my $status = ref $body eq 'HASH' ? $body->{status} : undef;
	my $rule = _rule('POST', "/relay$path", $status);
	if ($rule && !$rule->{apply})
	{
		return _rule_response($rule,
			_json_response($rule->{status}, { error => "injected by the fake relay" }));
	}
	croak "relay_to is not configured" unless $st{relay_to};
	my $r = HTTP::Tiny->new(timeout => 30, keep_alive => 0)->request('POST',
		$st{relay_to} . $path, { headers => { %{ $call->{headers} } }, content => $req->content });
	$call->{relayed} = $r->{status};
	$call->{answer} = $r->{content};
	if ($rule)
	{
		# The listener applied it; its answer is lost.
		return _rule_response($rule,
			_json_response($rule->{status}, { error => "injected by the fake relay" }));
	}
	my $resp = HTTP::Response->new($r->{status} == 599 ? 502 : $r->{status});
	for my $k (qw(content-type retry-after))
	{
		$resp->header($k => $r->{headers}{$k}) if defined $r->{headers}{$k};
	}
	$resp->content($r->{content} // '');
	return $resp;
}

# ---- Hetzner Cloud and Tailscale -------------------------------------------------

sub _authorized
{
	my ($req, $want) = @_;
	my $h = $req->header('Authorization') // '';
	return defined $want && $h eq "Bearer $want";
}

sub _api
{
	my ($req, $method, $path, $q, $body, $call) = @_;
	my $is_ts = $path =~ m{^/api/v2/};
	my $is_hc = $path =~ m{^/v1/};
	return _hcloud_error(404, 'not_found', "no route $method $path")
	  unless $is_ts || $is_hc;

	$call->{auth_ok} = _authorized($req, $is_ts ? $st{tailscale_key} : $st{hcloud_token}) ? 1 : 0;
	unless ($call->{auth_ok})
	{
		return $is_ts
		  ? _ts_error(401, 'API token invalid')
		  : _hcloud_error(401, 'unauthorized', 'unable to authenticate');
	}

	my $rule = _rule($method, $path);
	if ($rule && !$rule->{apply})
	{
		return _rule_response($rule,
			$is_ts
			? _ts_error($rule->{status}, 'injected failure')
			: _hcloud_error($rule->{status}, _hcloud_code($rule->{status}), 'injected failure'));
	}
	my $resp = $is_ts ? _tailscale($method, $path, $q, $body) : _hcloud($method, $path, $q, $body);
	if ($rule)
	{
		# The work is done; its answer is lost.
		$call->{applied} = $resp->code;
		return _rule_response($rule,
			$is_ts
			? _ts_error($rule->{status}, 'injected failure')
			: _hcloud_error($rule->{status}, 'server_error', 'injected failure'));
	}
	return $resp;
}

sub _server_json
{
	my ($s) = @_;
	return {
		id         => $s->{id} + 0,
		name       => $s->{name},
		status     => $s->{status},
		created    => $s->{created},
		labels     => $s->{labels},
		public_net => {
			ipv4 => { ip => $s->{ipv4}, blocked => JSON::PP::false },
			ipv6 => { ip => "2001:db8:$s->{n}::/64", blocked => JSON::PP::false },
		},
		server_type => { name => $s->{server_type} },
		image       => { name => $s->{image} },
		datacenter  => { location => { name => $s->{location} } },
	};
}

sub _action
{
	my ($command, $id) = @_;
	return {
		id        => $st{next_id}++,
		command   => $command,
		status    => 'running',
		progress  => 0,
		resources => [ { id => $id + 0, type => 'server' } ],
	};
}

my $label_key_re   = qr/^(?:[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?\/)?[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$/;
my $label_value_re = qr/^(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$/;

sub _hcloud
{
	my ($method, $path, $q, $body) = @_;
	if ($method eq 'POST' && $path eq '/v1/servers')
	{
		return _hcloud_error(400, 'json_error', 'body is not a JSON object')
		  unless ref $body eq 'HASH';
		for my $f (qw(name server_type image))
		{
			return _hcloud_error(422, 'invalid_input', "invalid input in field '$f'")
			  unless defined $body->{$f} && !ref $body->{$f} && length $body->{$f};
		}
		return _hcloud_error(422, 'invalid_input', "invalid input in field 'name'")
		  unless $body->{name} =~ /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
		my $labels = $body->{labels} // {};
		return _hcloud_error(422, 'invalid_input', "invalid input in field 'labels'")
		  unless ref $labels eq 'HASH'
		  && !grep { !/$label_key_re/ || ($labels->{$_} // '') !~ /$label_value_re/ } keys %$labels;
		return _hcloud_error(422, 'invalid_input', "invalid input in field 'user_data'")
		  if defined $body->{user_data} && length($body->{user_data}) > 32768;
		return _hcloud_error(422, 'invalid_input', "invalid input in field 'ssh_keys'")
		  if defined $body->{ssh_keys} && ref $body->{ssh_keys} ne 'ARRAY';
		return _hcloud_error(409, 'uniqueness_error', 'server name is already used')
		  if grep { $_->{name} eq $body->{name} } values %{ $st{servers} };
		my $id = $st{next_id}++;
		my $n = $st{next_ip}++;
		$st{servers}{$id} = {
			id          => $id,
			n           => $n,
			name        => $body->{name},
			status      => 'initializing',
			created     => POSIX::strftime('%Y-%m-%dT%H:%M:%S+00:00', gmtime),
			labels      => $labels,
			ipv4        => "203.0.113.$n",
			server_type => $body->{server_type},
			image       => $body->{image},
			location    => $body->{location} // 'fsn1',
			user_data   => $body->{user_data} // '',
			reads       => 0,
		};
		return _json_response(201, {
			server       => _server_json($st{servers}{$id}),
			action       => _action('create_server', $id),
			next_actions => [ _action('start_server', $id) ],
			root_password => @{ $body->{ssh_keys} // [] } ? undef : 'fake-root-password',
		});
	}
	if ($method eq 'GET' && $path eq '/v1/servers')
	{
		my @list = sort { $a->{id} <=> $b->{id} } values %{ $st{servers} };
		if (defined $q->{label_selector})
		{
			for my $term (split /,/, $q->{label_selector})
			{
				my ($k, $v) = $term =~ /^([^=!]+)=(.*)$/
				  or return _hcloud_error(400, 'invalid_input', "unsupported label_selector term '$term'");
				@list = grep { defined $_->{labels}{$k} && $_->{labels}{$k} eq $v } @list;
			}
		}
		@list = grep { $_->{name} eq $q->{name} } @list if defined $q->{name};
		return _json_response(200, {
			servers => [ map { _server_json($_) } @list ],
			meta => { pagination => { page => 1, per_page => 25, previous_page => undef,
					next_page => undef, last_page => 1, total_entries => scalar @list } },
		});
	}
	if ($path =~ m{^/v1/servers/(\d+)$})
	{
		my $s = $st{servers}{$1};
		return _hcloud_error(404, 'not_found', "server with ID '$1' not found") unless $s;
		if ($method eq 'GET')
		{
			$s->{reads}++;
			_boot($s) if $s->{status} eq 'initializing' && !$st{never_boot}
			  && $s->{reads} > $st{boot_polls};
			return _json_response(200, { server => _server_json($s) });
		}
		if ($method eq 'DELETE')
		{
			delete $st{servers}{$1};
			return _json_response(200, { action => _action('delete_server', $1) });
		}
	}
	return _hcloud_error(404, 'not_found', "no route $method $path");
}

# cloud-init, as far as the workflow's user_data asks for it.
sub _boot
{
	my ($s) = @_;
	$s->{status} = 'running';
	my $err = _boot_error($s);
	if ($err)
	{
		push @{ $st{calls} }, { method => 'BOOT', path => $s->{name}, boot_error => $err, at => time() };
		return;
	}
}

sub _boot_error
{
	my ($s) = @_;
	my $ud = $s->{user_data};
	return 'user_data does not start with #cloud-config' unless $ud =~ /\A#cloud-config\n/;
	my $doc = eval { YAML::XS::Load($ud) };
	return "user_data is not YAML: $@" unless ref $doc eq 'HASH';
	my %files = map { ($_->{path} // '') => $_ } @{ $doc->{write_files} // [] };
	my ($up) = grep { /\btailscale up\b/ } map { ref $_ ? join(' ', @$_) : $_ } @{ $doc->{runcmd} // [] };
	return 'runcmd has no tailscale up' unless $up;
	my ($file) = $up =~ /--auth-?key=file:(\S+)/;
	return "tailscale up takes no --auth-key=file: ($up)" unless $file;
	my ($hostname) = $up =~ /--hostname=(\S+)/;
	return "tailscale up sets no --hostname ($up)" unless $hostname;
	return "tailscale up names host $hostname, not the server's name $s->{name}"
	  unless $hostname eq $s->{name};
	my $f = $files{$file};
	return "write_files has no $file" unless $f;
	return "$file is not mode 0600" unless ($f->{permissions} // '') eq '0600';
	my $authkey = $f->{content} // '';
	$authkey =~ s/\s+\z//;
	my ($key) = grep { $_->{key} eq $authkey } values %{ $st{keys} };
	return 'the auth key is unknown to the tailnet' unless $key;
	return 'the auth key has expired' if $key->{expires} < time();
	return 'the auth key was used already' if $key->{used} && !$key->{reusable};
	$key->{used} = 1;
	return undef if $st{never_join};
	my $n = $s->{n};
	my $id = sprintf('%d', 70000000 + $n);
	$st{devices}{$id} = {
		id        => $id,
		nodeId    => "nFake$n",
		hostname  => $hostname,
		name      => "$hostname.tail0fake.ts.net",
		addresses => [ "100.64.0.$n", "fd7a:115c:a1e0::$n" ],
		authorized => JSON::PP::true,
		tags      => $key->{tags},
		created   => POSIX::strftime('%Y-%m-%dT%H:%M:%SZ', gmtime),
		polls     => 0,
	};
	return undef;
}

sub _device_json
{
	my ($d) = @_;
	my %copy = %$d;
	delete $copy{polls};
	return \%copy;
}

sub _tailscale
{
	my ($method, $path, $q, $body) = @_;
	if ($method eq 'POST' && $path eq '/api/v2/tailnet/-/keys')
	{
		return _ts_error(400, 'invalid JSON body') unless ref $body eq 'HASH';
		my $create = $body->{capabilities}{devices}{create};
		return _ts_error(400, 'capabilities.devices.create is required') unless ref $create eq 'HASH';
		my $expiry = $body->{expirySeconds} // 90 * 86400;
		return _ts_error(400, 'expirySeconds must be a positive number')
		  unless $expiry =~ /^\d+$/ && $expiry > 0;
		for my $t (@{ $create->{tags} // [] })
		{
			return _ts_error(400, "invalid tag \"$t\"") unless $t =~ /^tag:[A-Za-z0-9-]+$/;
		}
		my $n = scalar(keys %{ $st{keys} }) + 1;
		my $kid = "kFake${n}CNTRL";
		my $key = {
			id          => $kid,
			key         => "tskey-auth-$kid-" . join('', map { ('a' .. 'z', 0 .. 9)[ rand 36 ] } 1 .. 30),
			created     => time(),
			expires     => time() + $expiry,
			reusable    => $create->{reusable} ? 1 : 0,
			ephemeral   => $create->{ephemeral} ? 1 : 0,
			preauthorized => $create->{preauthorized} ? 1 : 0,
			tags        => $create->{tags} // [],
			description => $body->{description} // '',
			used        => 0,
		};
		$st{keys}{$kid} = $key;
		return _json_response(200, {
			id => $kid,
			key => $key->{key},
			created => POSIX::strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($key->{created})),
			expires => POSIX::strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($key->{expires})),
			capabilities => $body->{capabilities},
			description => $key->{description},
		});
	}
	if ($method eq 'GET' && $path eq '/api/v2/tailnet/-/devices')
	{
		my @list;
		for my $id (sort keys %{ $st{devices} })
		{
			my $d = $st{devices}{$id};
			next if $d->{polls}++ < $st{join_polls} - 1;
			push @list, _device_json($d);
		}
		return _json_response(200, { devices => \@list });
	}
	if ($method eq 'DELETE' && $path =~ m{^/api/v2/device/([^/]+)$})
	{
		return _ts_error(404, 'device not found') unless delete $st{devices}{$1};
		return _json_response(200, undef);
	}
	return _ts_error(404, "no route $method $path");
}

1;
