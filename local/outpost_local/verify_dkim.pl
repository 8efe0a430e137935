#!/usr/bin/perl
# Verify every DKIM-Signature of one message with Mail::DKIM (an implementation independent
# of dkimpy), fetching keys from the DNS server given on the command line.
#
# Usage: verify_dkim.pl NAMESERVER PORT MESSAGE_FILE
# Prints one line per signature: "<result>\t<a=>\t<d=>\t<s=>\t<result_detail>",
# then "overall\t<result>". Exits 0 when the message could be processed.
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Mail::DKIM::DNS;
use Net::DNS::Resolver;

my ($nameserver, $port, $file) = @ARGV;
die "usage: $0 NAMESERVER PORT MESSAGE_FILE\n" unless defined $file;

my $resolver = Net::DNS::Resolver->new(
    nameservers => [$nameserver],
    port        => $port,
    recurse     => 1,
    tcp_timeout => 5,
    udp_timeout => 5,
    retry       => 1,
);
Mail::DKIM::DNS::resolver($resolver);

open(my $fh, '<:raw', $file) or die "cannot open $file: $!\n";
my $verifier = Mail::DKIM::Verifier->new();
while (my $line = <$fh>) {
    # Mail::DKIM wants CRLF line ends, as on the wire.
    $line =~ s/\r?\n\z/\r\n/;
    $verifier->PRINT($line);
}
close($fh);
$verifier->CLOSE();

foreach my $sig ($verifier->signatures) {
    printf "%s\t%s\t%s\t%s\t%s\n", $sig->result, $sig->algorithm // '', $sig->domain // '',
        $sig->selector // '', $sig->result_detail;
}
printf "overall\t%s\n", $verifier->result;
exit 0;
