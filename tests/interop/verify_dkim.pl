# Mail::DKIM (what SpamAssassin uses) on every message file named on the command line:
# one line per signature "<file> s=<selector> a=<algorithm> <result> <detail>", then the
# overall result "<file> overall <result>". DNS: the system resolver (the tests' own NSD).
use strict;
use warnings;
use Mail::DKIM::Verifier;

for my $file (@ARGV) {
    open(my $fh, '<:raw', $file) or die "$file: $!";
    local $/;
    my $message = <$fh>;
    close($fh);
    $message =~ s/\r?\n/\r\n/g;
    my $verifier = Mail::DKIM::Verifier->new();
    $verifier->PRINT($message);
    $verifier->CLOSE();
    foreach my $signature ($verifier->signatures) {
        printf "%s s=%s a=%s %s %s\n", $file, $signature->selector, $signature->algorithm,
            $signature->result, ($signature->result_detail // '');
    }
    printf "%s overall %s\n", $file, $verifier->result;
}
