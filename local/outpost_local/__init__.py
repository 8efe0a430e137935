"""The embedded local stack: real network peers on loopback, for `outpost-local` and the tests.

`dns.DnsServer` (an authoritative DNS server), `pki.TestPki` (a test CA), `mx.MxServer`
(scriptable aiosmtpd MX hosts) and `postfix.PostfixInstance` (a private Postfix instance)
all start and stop in-process, on 127.0.0.x, as root or as an ordinary user (Postfix: root only).
"""
