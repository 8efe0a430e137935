# ruff: noqa: E501  (data: providers' reply texts kept on one line each)
"""What providers' own replies mean (data only): each row is a reply text or code the
provider documents, with the codes it comes with, and the Sisimai reason it names.

Facts as collected in Sisimai 4.25's Rhost modules (GoogleApps, ExchangeOnline, Mimecast,
Cox, Spectrum, FrancePTT, TencentQQ, GoDaddy, IUA, KDDI, NTTDOCOMO), Copyright (C)
azumakuniyuki, BSD 2-Clause License.  The texts are the providers' own: they name the
reason whichever MTA relays the reply, so they live in the generic layer (_vendor.py reads
them), not in a family row.  Wordings that are everybody's words ("account disabled", "550 :
User unknown") mean the provider's documented reason only when the remote host is the
provider's: those tables are keyed by host (PROVIDER_HOSTS) and read by _vendor.host_reason().
"""

from __future__ import annotations

# Google (Gmail, Google Workspace): (reply code, enhanced status, lower-case text, reason).
GOOGLE: tuple[tuple[int, str, str, str], ...] = (
    (421, '4.7.0', 'ip not in whitelist for rcpt domain, closing connection.', 'blocked'),
    (421, '4.7.0', 'our system has detected an unusual rate of unsolicited mail originating from your ip address', 'blocked'),
    (421, '4.7.0', 'try again later, closing connection.', 'blocked'),
    (501, '5.5.4', 'helo/ehlo argument is invalid', 'blocked'),
    (550, '5.7.1', 'our system has detected an unusual rate of unsolicited mail originating from your ip address', 'blocked'),
    (550, '5.7.1', "the ip you're using to send mail is not authorized to send email directly to our servers", 'blocked'),
    (550, '5.7.25', 'the ip address sending this message does not have a ptr record setup', 'blocked'),
    (550, '5.7.26', "is not accepted due to domain's dmarc policy", 'blocked'),
    (550, '5.7.1', 'fails to pass authentication checks', 'blocked'),
    (550, '5.7.26', 'fails to pass authentication checks', 'blocked'),
    (550, '5.7.26', 'this message fails to pass spf checks for an spf record with a hard fail', 'blocked'),
    (550, '5.7.1', 'this message is likely suspicious due to the very low reputation of the sending ip address', 'blocked'),
    (554, '5.6.0', 'mail message is malformed. not accepted', 'contenterror'),
    (552, '5.2.3', "your message exceeded google's message size limits", 'exceedlimit'),
    (451, '4.4.2', 'timeout - closing connection', 'expired'),
    (452, '4.2.2', 'the email account that you tried to reach is over quota', 'mailboxfull'),
    (552, '5.2.2', 'the email account that you tried to reach is over quota', 'mailboxfull'),
    (550, '5.7.1', 'email quota exceeded', 'mailboxfull'),
    (554, '5.6.0', 'message exceeded 50 hops, this may indicate a mail loop', 'networkerror'),
    (550, '5.7.0', 'mail relay denied', 'norelaying'),
    (550, '5.7.1', 'messages with multiple addresses in from: header are not accepted', 'policyviolation'),
    (550, '5.7.1', 'the user or domain that you are sending to (or from) has a policy that prohibited', 'policyviolation'),
    (552, '5.7.0', 'our system detected an illegal attachment on your message', 'policyviolation'),
    (552, '5.7.0', 'this message was blocked because its content presents a potential security issue', 'policyviolation'),
    (550, '5.7.0', 'mail sending denied', 'rejected'),
    (550, '5.7.1', 'unauthenticated email is not accepted from this domain', 'rejected'),
    (421, '4.7.0', 'tls required for rcpt domain, closing connection', 'securityerror'),
    (530, '5.5.1', 'authentication required.', 'securityerror'),
    (535, '5.7.1', 'application-specific password required', 'securityerror'),
    (535, '5.7.1', 'please log in with your web browser and then try again', 'securityerror'),
    (535, '5.7.1', 'username and password not accepted', 'securityerror'),
    (550, '5.7.1', 'invalid credentials for relay', 'securityerror'),
    (550, '5.7.1', 'our system has detected that this message is likely unsolicited mail', 'spamdetected'),
    (550, '5.2.1', 'the email account that you tried to reach is disabled', 'suspend'),
    (451, '4.5.0', 'smtp protocol violation, visit rfc 2821', 'syntaxerror'),
    (454, '4.5.0', 'smtp protocol violation, no commands allowed to pipeline after starttls', 'syntaxerror'),
    (454, '5.5.1', 'starttls may not be repeated', 'syntaxerror'),
    (502, '5.5.1', 'too many unrecognized commands, goodbye', 'syntaxerror'),
    (502, '5.5.1', 'unimplemented command', 'syntaxerror'),
    (502, '5.5.1', 'unrecognized command', 'syntaxerror'),
    (503, '5.5.1', 'ehlo/helo first', 'syntaxerror'),
    (503, '5.5.1', 'mail first', 'syntaxerror'),
    (503, '5.5.1', 'rcpt first', 'syntaxerror'),
    (503, '5.7.0', 'no identity changes permitted', 'syntaxerror'),
    (504, '5.7.4', 'unrecognized authentication type', 'syntaxerror'),
    (530, '5.7.0', 'must issue a starttls command first', 'syntaxerror'),
    (535, '5.5.4', 'optional argument not permitted for that auth mode', 'syntaxerror'),
    (554, '5.7.0', 'too many unauthenticated commands', 'syntaxerror'),
    (555, '5.5.2', 'syntax error', 'syntaxerror'),
    (421, '4.3.0', 'temporary system problem', 'systemerror'),
    (421, '4.7.0', 'temporary system problem', 'systemerror'),
    (421, '4.4.5', 'server busy', 'systemerror'),
    (451, '4.3.0', 'mail server temporarily rejected message', 'systemerror'),
    (454, '4.7.0', 'cannot authenticate due to temporary system problem', 'systemerror'),
    (452, '4.5.3', 'domain policy size per transaction exceeded', 'systemerror'),
    (451, '4.3.0', 'multiple destination domains per transaction is unsupported', 'toomanyconn'),
    (452, '4.5.3', 'your message has too many recipients', 'toomanyconn'),
    (450, '4.2.1', 'is receiving mail too quickly', 'toomanyconn'),
    (450, '4.2.1', 'is receiving mail at a rate that prevents additional messages from being delivered', 'toomanyconn'),
    (550, '5.2.1', 'is receiving mail at a rate that prevents additional messages from being delivered', 'toomanyconn'),
    (450, '4.2.1', 'peak smtp relay limit exceeded for customer', 'toomanyconn'),
    (550, '5.4.5', 'daily smtp relay limit exceeded for user', 'toomanyconn'),
    (550, '5.4.5', 'daily sending quota exceeded', 'toomanyconn'),
    (550, '5.7.1', 'daily smtp relay limit exceeded for customer', 'toomanyconn'),
    (550, '5.1.1', 'the email account that you tried to reach does not exist', 'userunknown'),
    (553, '5.1.2', "we weren't able to find the recipient domain", 'userunknown'),
)

# Microsoft (Exchange Online, Outlook.com): (status prefix, first, last, lower-case text,
# reason).  first == last == 0: the status must equal the prefix; otherwise the status must
# start with the prefix and its last number lie in [first, last] (Microsoft numbers its
# 4.7.xxx / 5.7.xxx refusals in ranges).
MICROSOFT: tuple[tuple[str, int, int, str, str], ...] = (
    ('4.4.2', 0, 0, 'connection dropped', 'blocked'),
    ('4.7.', 850, 899, 'access denied, please try again later', 'blocked'),
    ('5.7.25', 0, 0, 'must have a reverse dns record', 'blocked'),
    ('5.7.506', 0, 0, 'access denied, bad helo', 'blocked'),
    ('5.7.507', 0, 0, 'access denied, rejected by recipient', 'blocked'),
    ('5.7.510', 0, 0, 'does not accept email over ipv6', 'blocked'),
    ('5.7.511', 0, 0, 'access denied, banned sender', 'blocked'),
    ('5.7.513', 0, 0, 'using customer block list', 'blocked'),
    ('5.7.', 606, 649, 'access denied, banned sending ip ', 'blocked'),
    ('4.7.', 500, 699, 'access denied, please try again later', 'blocked'),
    ('5.5.4', 0, 0, 'invalid domain name', 'blocked'),
    ('5.7.51', 0, 0, 'restrictdomainstoipaddresses or restrictdomainstocertificate', 'blocked'),
    ('5.7.1', 0, 0, 'part of their network is on our block list (s3150)', 'blocked'),
    ('4.7.26', 0, 0, 'must pass either spf or dkim validation, this message is not signed', 'blocked'),
    ('4.7.323', 0, 0, 'tlsa-invalid: the domain failed dane validation', 'blocked'),
    ('5.7.323', 0, 0, 'tlsa-invalid: the domain failed dane validation', 'blocked'),
    ('4.7.324', 0, 0, 'dnssec-invalid: destination domain returned invalid dnssec records', 'blocked'),
    ('5.7.324', 0, 0, 'dnssec-invalid: destination domain returned invalid dnssec records', 'blocked'),
    ('4.7.325', 0, 0, 'certificate-host-mismatch: remote certificate must have a common name or subject alternative name matching the hostname (dane)', 'blocked'),
    ('5.7.325', 0, 0, 'certificate-host-mismatch: remote certificate must have a common name or subject alternative name matching the hostname (dane)', 'blocked'),
    ('5.7.23', 0, 0, 'the message was rejected because of sender policy framework violation', 'blocked'),
    ('5.7.322', 0, 0, "certificate-expired: destination mail server's certificate is expired", 'blocked'),
    ('5.7.509', 0, 0, 'does not pass dmarc verification', 'blocked'),
    ('4.7.650', 0, 0, 'has been temporarily rate limited due to ip reputation', 'blocked'),
    ('5.3.0', 0, 0, 'too many related errors', 'contenterror'),
    ('5.6.11', 0, 0, 'invalid characters', 'contenterror'),
    ('5.4.11', 0, 0, 'agent generated message depth exceeded', 'contenterror'),
    ('5.5.6', 0, 0, 'invalid message content', 'contenterror'),
    ('5.2.3', 0, 0, 'resolver.rst.recipsizelimit; message too large for this recipient', 'exceedlimit'),
    ('4.4.1', 0, 0, 'connection timed out', 'expired'),
    ('4.4.7', 0, 0, 'message delayed', 'expired'),
    ('4.4.7', 0, 0, 'queue expired; message expired', 'expired'),
    ('4.4.7', 0, 0, 'message expired', 'expired'),
    ('5.4.300', 0, 0, 'message expired', 'expired'),
    ('5.2.2', 0, 0, 'mailbox full', 'mailboxfull'),
    ('5.3.4', 0, 0, 'message size exceeds fixed maximum message size', 'mesgtoobig'),
    ('5.3.4', 0, 0, 'message too big for system', 'mesgtoobig'),
    ('5.4.4', 0, 0, 'smtpsend.dns.nonexistentdomain; nonexistent domain', 'networkerror'),
    ('5.4.6', 0, 0, 'hop count exceeded - possible mail loop', 'networkerror'),
    ('4.4.316', 0, 0, 'connection refused', 'networkerror'),
    ('5.4.4', 0, 0, 'invalid arguments', 'networkerror'),
    ('5.4.6', 0, 0, 'routing loop detected', 'networkerror'),
    ('5.4.14', 0, 0, 'routing loop detected', 'networkerror'),
    ('5.7.1', 0, 0, 'unable to relay', 'norelaying'),
    ('5.7.1', 0, 0, 'client was not authenticated', 'norelaying'),
    ('5.4.1', 0, 0, 'relay access denied', 'norelaying'),
    ('5.7.1', 0, 0, 'unable to relay', 'norelaying'),
    ('5.7.64', 0, 0, 'tenantattribution; relay access denied', 'norelaying'),
    ('4.3.2', 0, 0, 'system not accepting network messages', 'notaccept'),
    ('5.3.2', 0, 0, 'storedrv.deliver: missing or bad storedriver mdb properties', 'notaccept'),
    ('5.0.350', 0, 0, 'x-dg-ref header is too long', 'policyviolation'),
    ('5.0.350', 0, 0, 'requested action not taken: policy violation detected (as345)', 'policyviolation'),
    ('5.7.', 900, 999, 'delivery not authorized, message refused', 'policyviolation'),
    ('5.1.7', 0, 0, 'invalid address', 'rejected'),
    ('5.1.7', 0, 0, 'unknown sender address', 'rejected'),
    ('5.1.0', 0, 0, 'sender denied', 'rejected'),
    ('5.1.8', 0, 0, 'access denied, bad outbound sender', 'rejected'),
    ('5.7.1', 0, 0, 'delivery not authorized', 'rejected'),
    ('5.7.12', 0, 0, 'sender was not authenticated by organization', 'rejected'),
    ('5.7.124', 0, 0, 'sender not in allowed-senders list', 'rejected'),
    ('5.7.133', 0, 0, 'sender not authenticated for group', 'rejected'),
    ('5.7.134', 0, 0, 'sender was not authenticated for mailbox', 'rejected'),
    ('5.7.13', 0, 0, 'sender was not authenticated for public folder', 'rejected'),
    ('5.7.135', 0, 0, 'sender was not authenticated for public folder', 'rejected'),
    ('5.7.136', 0, 0, 'sender was not authenticated', 'rejected'),
    ('5.7.', 501, 503, 'access denied, spam abuse detected', 'rejected'),
    ('5.7.512', 0, 0, 'access denied, message must be rfc 5322 section 3.6.2 compliant', 'rejected'),
    ('5.7.750', 0, 0, 'service unavailable. client blocked from sending from unregistered domains', 'rejected'),
    ('5.7.', 501, 503, 'access denied, banned sender', 'rejected'),
    ('5.7.3', 0, 0, 'cannot achieve exchange server authentication', 'securityerror'),
    ('5.7.3', 0, 0, 'not authorized', 'securityerror'),
    ('4.7.321', 0, 0, 'starttls-not-supported: destination mail server must support tls to receive mail', 'securityerror'),
    ('5.7.321', 0, 0, 'starttls-not-supported: destination mail server must support tls to receive mail', 'securityerror'),
    ('5.7.1', 0, 0, 'client was not authenticated', 'securityerror'),
    ('5.7.57', 0, 0, 'client was not authenticated to send anonymous mail during mail from', 'securityerror'),
    ('5.2.1', 0, 0, 'content filter agent quarantined this message', 'spamdetected'),
    ('5.7.504', 0, 0, 'recipient address rejected: access denied', 'suspend'),
    ('5.7.505', 0, 0, 'access denied, banned recipient', 'suspend'),
    ('5.2.1', 0, 0, 'mailbox cannot be accessed', 'suspend'),
    ('5.3.3', 0, 0, 'unrecognized command', 'syntaxerror'),
    ('5.5.2', 0, 0, 'send hello first', 'syntaxerror'),
    ('4.3.2', 0, 0, 'service not available', 'systemerror'),
    ('4.3.2', 0, 0, 'service not active', 'systemerror'),
    ('5.3.5', 0, 0, 'system incorrectly configured', 'systemerror'),
    ('5.3.190', 0, 0, 'journaling on-premises messages to microsoft 365 or office 365 not supported when journaling archive is disabled', 'systemerror'),
    ('5.0.0', 0, 0, 'helo / ehlo requires domain address', 'systemerror'),
    ('5.1.4', 0, 0, 'destination mailbox address ambiguous', 'systemerror'),
    ('5.2.4', 0, 0, 'mailing list expansion problem', 'systemerror'),
    ('5.2.14', 0, 0, 'misconfigured forwarding address', 'systemerror'),
    ('4.4.3', 0, 0, 'temporary server error. please try again later attr18', 'systemerror'),
    ('4.7.0', 0, 0, 'temporary server error. please try again later. prx4 nexthop:', 'systemerror'),
    ('4.4.24', 0, 0, 'message failed to be replicated: insufficient system resource:', 'systemerror'),
    ('4.4.25', 0, 0, 'message failed to be replicated: no healthy secondary server available to accept replica at this time.', 'systemerror'),
    ('4.4.28', 0, 0, 'message failed to be replicated: the operation was canceled', 'systemerror'),
    ('4.7.500', 0, 0, 'server busy. please try again later from ', 'systemerror'),
    ('4.7.700', 0, 0, 'pfa agent busy, please try again.', 'systemerror'),
    ('4.3.1', 0, 0, 'insufficient system resources', 'systemfull'),
    ('5.5.3', 0, 0, 'too many recipients', 'toomanyconn'),
    ('4.5.3', 0, 0, 'too many recipients', 'toomanyconn'),
    ('5.2.122', 0, 0, 'the recipient has exceeded their limit for', 'toomanyconn'),
    ('4.3.2', 0, 0, 'storedrv.deliver; recipient thread limit exceeded', 'toomanyconn'),
    ('5.1.90', 0, 0, "your message can't be sent because you've reached your daily limit for message recipients", 'toomanyconn'),
    ('5.2.2', 0, 0, 'submission quota exceeded', 'toomanyconn'),
    ('5.2.121', 0, 0, "recipient's per hour message receive limit from specific sender exceeded", 'toomanyconn'),
    ('5.2.122', 0, 0, "recipient's per hour message receive limit exceeded", 'toomanyconn'),
    ('5.7.508', 0, 0, 'has exceeded permitted limits within', 'toomanyconn'),
    ('5.7.', 700, 749, 'access denied, tenant has exceeded threshold', 'toomanyconn'),
    ('5.7.', 700, 749, 'access denied, traffic not accepted from this ip', 'toomanyconn'),
    ('5.1.1', 0, 0, 'resolver.adr.exrecipnotfound; not found', 'userunknown'),
    ('5.1.1', 0, 0, 'user unknown', 'userunknown'),
    ('5.1.3', 0, 0, 'storedrv.submit; invalid recipient address', 'userunknown'),
    ('5.1.', 4, 5, 'recipient address reserved by rfc 2606', 'userunknown'),
    ('5.1.6', 0, 0, 'recipient addresses in single label domains not accepted', 'userunknown'),
    ('5.1.1', 0, 0, 'bad destination mailbox address', 'userunknown'),
    ('5.1.10', 0, 0, 'recipient not found', 'userunknown'),
    ('5.4.1', 0, 0, 'recipient address rejected: access denied', 'userunknown'),
    ('5.5.0', 0, 0, 'requested action not taken: mailbox unavailable', 'userunknown'),
    ('5.1.2', 0, 0, 'invalid x.400 address', 'userunknown'),
)

# Mimecast: (reply code, lower-case text, reason); Mimecast's published rejection texts.
# Only the wordings that are Mimecast's own: generic ones ("invalid recipient", "user
# unknown") are left to the generic classifier.
MIMECAST: tuple[tuple[int, str, str], ...] = (
    (550, "local ct ip reputation - (reject)", "blocked"),
    (550, "spf sender invalid - envelope rejected", "blocked"),
    (550, "dkim sender invalid - envelope rejected", "blocked"),
    (550, "dmarc sender invalid - envelope rejected", "blocked"),
    (554, "maximum email size exceeded", "mesgtoobig"),
    (451, "open relay not allowed", "norelaying"),
    (451, "account inbounds disabled", "notaccept"),
    (550, "anti-spoofing policy - inbound not allowed", "policyviolation"),
    (550, "rejected by header-based anti-spoofing policy", "policyviolation"),
    (550, "message bounced due to content examination policy", "policyviolation"),
    (554, "host network not allowed", "policyviolation"),
    (550, "administrative prohibition envelope blocked", "rejected"),
    (550, "envelope rejected - block policy for envelope from address", "rejected"),
    (553, "this route requires encryption (tls)", "securityerror"),
    (553, "this route requires tls version 1.2 or greater", "securityerror"),
    (553, "this route requires high-strength ciphers", "securityerror"),
    (550, "exceeding outbound thread limit", "toomanyconn"),
    (554, "email rejected due to security policies", "virusdetected"),
)

# Cox: "AUP#CODE" at the end of its refusals (Cox's published list of error codes).
COX_AUP: dict[str, str] = {
    "CXBL": "blocked", "CXTHRT": "securityerror", "CXMJ": "securityerror",
    "CXDNS": "blocked", "CXSNDR": "rejected", "CXSMTP": "rejected", "CXCNCT": "toomanyconn",
    "CXMXRT": "toomanyconn", "CDRBL": "blocked", "IPBL0001": "blocked", "IPBL0010": "blocked",
    "IPBL0100": "blocked", "IPBL0011": "blocked", "IPBL0101": "blocked", "IPBL0110": "blocked",
    "IPBL0111": "blocked", "IPBL1000": "blocked", "IPBL1001": "blocked", "IPBL1010": "blocked",
    "IPBL1011": "blocked", "IPBL1100": "blocked", "IPBL1101": "blocked", "IPBL1110": "blocked",
    "IPBL1111": "blocked", "IPBL00001": "blocked", "URLBL011": "spamdetected",
    "URLBL101": "spamdetected", "URLBL110": "spamdetected", "URLBL1001": "spamdetected",
}

# Spectrum (Charter): the number in "AUP#I-nnnn" / "AUP#O-nnnn" at the end of its refusals
# (Spectrum's published list "Understanding email error codes"): (first, last, reason),
# single codes as one-number ranges.  (Sisimai::Rhost::Spectrum spells 1220-1250's reason
# "blokced": the list says blacklisted by Spamhaus, i.e. blocked.)
SPECTRUM_AUP: tuple[tuple[int, int, str], ...] = (
    (1000, 1000, "blocked"), (1010, 1010, "rejected"), (1020, 1080, "rejected"),
    (1090, 1090, "systemerror"), (1100, 1150, "blocked"), (1160, 1190, "policyviolation"),
    (1200, 1250, "blocked"), (1260, 1260, "networkerror"), (1300, 1490, "toomanyconn"),
    (1500, 1520, "rejected"), (1530, 1530, "mesgtoobig"), (1540, 1550, "toomanyconn"),
    (1560, 1560, "policyviolation"),
)

# Orange and La Poste (France): "LPN007_426", "OFR_999", "OUK_513": the last three digits
# are the code (Orange's and La Poste's published lists).  Codes documented as "try later"
# without a cause say nothing more: "undefined".
FRANCE_PTT: dict[str, str] = {
    "101": "blocked", "102": "blocked", "103": "blocked", "104": "toomanyconn",
    "105": "undefined", "107": "undefined", "108": "undefined", "109": "undefined",
    "201": "undefined", "305": "securityerror", "401": "blocked", "402": "securityerror",
    "403": "rejected", "405": "rejected", "415": "rejected", "416": "userunknown",
    "417": "mailboxfull", "418": "userunknown", "420": "suspend", "421": "rejected",
    "423": "undefined", "424": "undefined", "426": "suspend", "505": "systemerror",
    "506": "spamdetected", "510": "blocked", "513": "undefined", "514": "mesgtoobig",
    "517": "policyviolation", "630": "policyviolation", "999": "blocked",
}

# Tencent QQ: lower-case reply texts -> reason (Tencent's help pages).
TENCENT: tuple[tuple[str, str], ...] = (
    ("dmarc check failed", "blocked"), ("spf check failed", "blocked"),
    ("suspected spam ip", "blocked"), ("mail is rejected by recipients", "filtered"),
    ("mail content denied", "spamdetected"), ("spam is embedded in the email", "spamdetected"),
    ("bad address syntax", "syntaxerror"), ("connection denied", "toomanyconn"),
    ("mailbox unavailable or access denied", "toomanyconn"),
    ("mailbox not found", "userunknown"),
)

# GoDaddy (smtp.secureserver.net): the "IBnnn" code that ends each of its refusals (GoDaddy's
# help page "What does my email bounceback mean?", as listed in Sisimai::Rhost::GoDaddy).
# The code names its own provider, so it is read in any reply.
GODADDY_CODES: dict[str, str] = {
    "IB103": "blocked", "IB104": "blocked", "IB105": "blocked", "IB106": "blocked",
    "IB007": "toomanyconn", "IB101": "expired", "IB108": "blocked", "IB110": "blocked",
    "IB111": "blocked", "IB112": "blocked", "IB113": "blocked", "IB212": "spamdetected",
    "IB401": "securityerror", "IB501": "rejected", "IB502": "rejected",
    "IB504": "toomanyconn", "IB506": "rejected", "IB508": "rejected",
    "IB510": "toomanyconn", "IB607": "toomanyconn", "IB705": "virusdetected",
}

# GoDaddy's bouncebacks without a code (same page): lower-case text -> reason, in GoDaddy's
# reply only (host "smtp.secureserver.net" / "mailstore1.secureserver.net").
GODADDY_TEXTS: tuple[tuple[str, str], ...] = (
    ("www.spamhaus.org/query/bl?ip=", "blocked"), ("554 rbl reject.", "blocked"),
    ("delivery timeout", "expired"),
    ("451 sorry, i wasn't able to establish an smtp connection.", "expired"),
    ("account disabled", "suspend"), ("account storage limit", "mailboxfull"),
    ("account does not exist", "userunknown"), ("550 recipient not found.", "userunknown"),
)

# I.UA (Ukraine): its refusals link "http://mail.i.ua/err/N"; N -> reason (i.ua's error
# pages).  The link names the provider, so it is read in any reply.
IUA_CODES: dict[str, str] = {
    "1": "norelaying", "2": "userunknown", "3": "suspend", "4": "mailboxfull",
    "5": "toomanyconn", "6": "norelaying", "7": "blocked", "8": "rejected", "9": "blocked",
    "10": "filtered",
}

# KDDI (au, ezweb.ne.jp): the same "User unknown" means two things on its MX hosts: with the
# address in the reply it is an unknown user; with no address ("550 : User unknown") the
# recipient's own filter refused the sender.  Lower-case text -> reason, KDDI's hosts only.
KDDI_TEXTS: tuple[tuple[str, str], ...] = (
    (">: user unknown", "userunknown"), ("550 : user unknown", "filtered"),
)

# NTT DOCOMO (mfsmax.docomo.ne.jp) answers "550 Unknown user" both for an unknown address
# (at RCPT) and for a recipient whose filter refuses the sender (at DATA); the status and
# the command tell them apart.  Status -> reason; then lower-case text -> reason; then, for
# a 5.0.0 status, the command the reply answered -> reason.  DOCOMO's hosts only.
NTTDOCOMO_STATUS: dict[str, str] = {
    "5.1.1": "userunknown", "5.0.911": "userunknown", "5.2.0": "filtered",
}
NTTDOCOMO_TEXTS: tuple[tuple[str, str], ...] = (
    ("552 too much mail data", "mailboxfull"), ("552 too many recipients", "toomanyconn"),
    ("503 bad sequence of commands", "syntaxerror"),
    ("504 command parameter not implemented", "syntaxerror"),
)
NTTDOCOMO_COMMAND: dict[str, str] = {"RCPT": "userunknown", "DATA": "rejected"}

# Whose host a remote MTA is: (lower-case host name or ".suffix", provider).  A name without
# a leading dot must equal the host; ".suffix" matches the end of it.
PROVIDER_HOSTS: tuple[tuple[str, str], ...] = (
    ("smtp.secureserver.net", "godaddy"), ("mailstore1.secureserver.net", "godaddy"),
    (".ezweb.ne.jp", "kddi"), (".au.com", "kddi"),
    ("mfsmax.docomo.ne.jp", "nttdocomo"), (".mfsmax.docomo.ne.jp", "nttdocomo"),
)
