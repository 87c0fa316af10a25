#!/usr/bin/perl
# Writes the request corpus of the HTTP benchmark, two files per wrk thread:
# requests.<t>, the raw HTTP requests, each followed by a NUL byte (so that
# wrk's init() only reads the file and request() only cuts the next one
# out), and corpus.<t>, the same requests one per line as
#   <kind> TAB <delivery id> TAB <hex HMAC-SHA256 of the body> TAB <body>
# for the runner's checks.  Kinds: `run` (a new `running` callback with VM
# metadata, for a job no other request touches), `hb` (a heartbeat of a provisioning job) or `dup`
# (a redelivery of a `running` callback recorded before the run).  The job
# numbering, bodies and delivery ids are those of bench/sql (reset.sql,
# running.sql, heartbeat.sql, duplicate.sql), so both benchmarks send the
# same callbacks to the same database state.  Every delivery id except the
# `dup-` ones is unique in the corpus, and requests are dealt to the thread
# files in turn, so no delivery is sent twice unless it is meant to be.
#
# Usage: corpus.pl --out DIR --requests N --threads T --new0 J --hb H
#                  --dup0 D --dup-n N [--seed S]
# The secret is read from standard input (its first line, as raw bytes: the
# benchmark's secret has no whsec_ prefix), so it never shows in argv.
use strict;
use warnings;
use Digest::SHA qw(hmac_sha256_hex);
use Getopt::Long;

my %o = (seed => 1);
GetOptions(\%o, 'out=s', 'requests=i', 'threads=i', 'new0=i', 'hb=i',
           'dup0=i', 'dup-n=i', 'seed=i')
    or die "corpus.pl: bad options\n";
for my $k (qw(out requests threads new0 hb dup0 dup-n)) {
    die "corpus.pl: --$k is required\n" unless defined $o{$k};
}
my $secret = <STDIN>;
die "corpus.pl: no secret on standard input\n" unless defined $secret;
chomp $secret;

srand($o{seed});
my (@fh, @rh);
for my $t (1 .. $o{threads}) {
    open($fh[$t], '>', "$o{out}/corpus.$t")
        or die "corpus.pl: cannot write $o{out}/corpus.$t: $!\n";
    open($rh[$t], '>:raw', "$o{out}/requests.$t")
        or die "corpus.pl: cannot write $o{out}/requests.$t: $!\n";
}

sub job_uuid { sprintf '00000000-0000-4000-8000-%d', 100000000000 + $_[0] }

sub running_body {
    my ($j) = @_;
    return '{"job_id": "' . job_uuid($j) . '", "status": "running", "server_id": ' . $j
         . ', "server_ip": "203.0.113.10", "tailscale_ip": "100.64.0.10", "workflow_run": "bench"}';
}

my ($next_new, $next_hb) = ($o{new0}, 0);
my %count = (run => 0, hb => 0, dup => 0);
for my $i (0 .. $o{requests} - 1) {
    my $r = rand();
    my ($kind, $id, $body);
    if ($r < 0.50) {
        ($kind, $id, $body) = ('run', "run-$next_new", running_body($next_new));
        $next_new++;
    } elsif ($r < 0.95) {
        my $h = 1 + int(rand($o{hb}));
        $next_hb++;
        ($kind, $id, $body) = ('hb', "hb-http-$next_hb",
                               '{"job_id": "' . job_uuid($h) . '", "status": "heartbeat"}');
    } else {
        my $d = $o{dup0} + int(rand($o{'dup-n'}));
        ($kind, $id, $body) = ('dup', "dup-$d", running_body($d));
    }
    $count{$kind}++;
    my $t = 1 + $i % $o{threads};
    my $sig = hmac_sha256_hex($body, $secret);
    print { $fh[$t] } join("\t", $kind, $id, $sig, $body), "\n";
    # what GitHub sends, less the headers the listener does not read
    print { $rh[$t] } "POST /webhooks/github HTTP/1.1\r\n",
        "Host: 127.0.0.1\r\n",
        "User-Agent: GitHub-Hookshot/bench\r\n",
        "Content-Type: application/json\r\n",
        "Content-Length: ", length($body), "\r\n",
        "X-GitHub-Event: workflow_run\r\n",
        "X-GitHub-Delivery: $id\r\n",
        "X-Hub-Signature-256: sha256=$sig\r\n",
        "\r\n", $body, "\0";
}
for my $t (1 .. $o{threads}) {
    close($fh[$t]) or die "corpus.pl: cannot write $o{out}/corpus.$t: $!\n";
    close($rh[$t]) or die "corpus.pl: cannot write $o{out}/requests.$t: $!\n";
}
# The highest job number a `running` request uses: the job set must reach it.
print "$count{run} $count{hb} $count{dup} ", $next_new - 1, "\n";
