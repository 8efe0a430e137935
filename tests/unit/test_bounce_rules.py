"""Rules added to reach Sisimai-level agreement, each on a small hand-written message that
shows the shape it handles (real samples of each are in tests/golden/bounces)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from outpost.bounces import _phrases, _providers, classify, parse_bounce, status_from_text
from outpost.bounces._prefilter import PhraseRegex, Prefiltered, needles
from outpost.bounces._vendor import host_reason, provider_of_host, vendor_reason
from outpost.bounces.classify import command_from_text
from outpost.bounces.families import FAMILIES, ORIGINAL_MARKERS
from outpost.bounces.textscan import FAMILY_ROWS, rows_disabled

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "bounces"

DSN_BODY = (
    "--REAL\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n"
    "--REAL\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
    "Final-Recipient: rfc822; nobody@example.com\nAction: failed\nStatus: 5.1.1\n"
    "Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.com>: user unknown\n\n--REAL--\n"
)


def _msg(headers: str, body: str) -> bytes:
    return (headers + "\n" + body).encode()


def test_multipart_whose_declared_boundary_never_occurs_is_repaired() -> None:
    raw = _msg("From: MAILER-DAEMON@mx.example.net\nSubject: Undelivered Mail\n"
               "MIME-Version: 1.0\nContent-Type: multipart/report; "
               "report-type=delivery-status; boundary=\"WRONG\"\n", DSN_BODY)
    rep = parse_bounce(raw)
    assert [(r.address, r.status, r.kind) for r in rep.recipients] == [
        ("nobody@example.com", "5.1.1", "hard")]


def test_sendmail_text_with_the_report_inline_and_no_mime_parts() -> None:
    # A multipart/report whose parts were flattened: the fields are in the text, after
    # "The original message was received at" (which is not the copy of the original).
    body = ("The original message was received at Thu, 29 Apr 2000 23:34:45 +0900\n"
            "from [192.0.2.230]\n\n   ----- The following addresses had permanent fatal "
            "errors -----\n<kijitora@example.net>\n\n   ----- Transcript of session follows "
            "-----\nmail.local: unknown user: kijitora\n554 <kijitora@example.net>... Service "
            "unavailable\n\nReporting-MTA: dns; mx.example.net\n\nFinal-Recipient: RFC822; "
            "<kijitora@example.net>\nAction: failed\nStatus: 5.5.0\n")
    raw = _msg("From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.net>\n"
               "Subject: Returned mail: Service unavailable\nMIME-Version: 1.0\n"
               "Content-Type: multipart/report; report-type=delivery-status;\n"
               "    boundary=\"gone\"\n", body)
    [r] = parse_bounce(raw).recipients
    assert (r.address, r.status) == ("kijitora@example.net", "5.5.0")


def test_quoted_local_part_keeps_its_quotes() -> None:
    body = DSN_BODY.replace("nobody@example.com", '"john..doe"@Example.COM')
    raw = _msg("From: MAILER-DAEMON@mx.example.net\nMIME-Version: 1.0\n"
               "Content-Type: multipart/report; boundary=\"REAL\"\n", body)
    assert [r.address for r in parse_bounce(raw).recipients] == ['"john..doe"@example.com']


def test_amazon_ses_notification_raw_and_sns_wrapped() -> None:
    payload = {
        "notificationType": "Bounce",
        "bounce": {"bounceType": "Transient", "bounceSubType": "MailboxFull",
                   "reportingMTA": "dsn; a1-2.smtp-out.amazonses.com",
                   "bouncedRecipients": [{"emailAddress": "full@example.org",
                                          "action": "failed", "status": "5.2.2",
                                          "diagnosticCode": "smtp; 552 5.2.2 over quota"}]},
        "mail": {"messageId": "0100-abc"},
    }
    head = "From: no-reply@sns.amazonaws.com\nSubject: AWS Notification Message\n"
    for body in (json.dumps(payload),
                 json.dumps({"Type": "Notification", "Message": json.dumps(payload)})):
        rep = parse_bounce(_msg(head, body + "\n\n--\nIf you wish to stop receiving...\n"))
        assert rep.family == "amazonses" and rep.original_message_id == "0100-abc"
        [r] = rep.recipients
        assert (r.address, r.status, r.kind, r.reason, r.remote_mta) == (
            "full@example.org", "5.2.2", "soft", "mailboxfull", "a1-2.smtp-out.amazonses.com")
    complaint = {"notificationType": "Complaint",
                 "complaint": {"complainedRecipients": [{"emailAddress": "c@example.org"}],
                               "complaintFeedbackType": "abuse"}}
    rep = parse_bounce(_msg(head, json.dumps(complaint)))
    assert rep.kind == "feedback" and [(r.address, r.reason) for r in rep.recipients] == [
        ("c@example.org", "feedback")]
    delivery = {"notificationType": "Delivery", "delivery": {"recipients": ["ok@example.org"]}}
    assert parse_bounce(_msg(head, json.dumps(delivery))).recipients == ()


def test_microsoft_jmrp_complaint_is_feedback() -> None:
    raw = _msg("From: staff@hotmail.com\nSubject: complaint about message from 192.0.2.1\n"
               "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"J\"\n",
               "--J\nContent-Type: message/rfc822\n\nX-HmXmrOriginalRecipient: "
               "victim@example.com\nTo: victim@example.com\nFrom: app@example.org\n"
               "Subject: hi\n\nbody\n--J--\n")
    rep = parse_bounce(raw)
    assert rep.kind == "feedback"
    assert [(r.address, r.kind, r.reason) for r in rep.recipients] == [
        ("victim@example.com", "unknown", "feedback")]


def test_fallback_row_reads_plain_daemon_text() -> None:
    raw = _msg("From: MAILER-DAEMON@isp.example.net\nSubject: Returned mail: see below\n",
               "User's mailbox is full: <someone@example.net>\nUnable to deliver mail.\n")
    [r] = parse_bounce(raw).recipients
    assert (r.address, r.kind, r.reason) == ("someone@example.net", "soft", "mailboxfull")
    # Not from a mailer daemon: not read as a bounce.
    assert parse_bounce(_msg("From: friend@example.org\nSubject: hello\n",
                             "User's mailbox is full: <someone@example.net>\n")).recipients == ()


def test_status_after_a_quoted_reply_code_wins_over_a_leading_one() -> None:
    # Amazon SES: its own summary first, then the remote server's reply in quotes.
    diag = "5.1.0 - Unknown address error 550-'5.7.1 <x@example.com>... Access denied'"
    assert status_from_text(diag) == "5.7.1"


def test_status_meaning_stands_for_non_smtp_diagnostics() -> None:
    # Postfix virtual(8): "Status: 5.2.2" with "Diagnostic-Code: x-unix; input/output error".
    assert classify("5.2.2", "input/output error", "failed", diagnostic_type="X-UNIX") == (
        "soft", "mailboxfull")
    assert classify(None, "mail.local: unknown user", "failed", diagnostic_type="X-UNIX")[1] \
        == "mailererror"


def test_vendor_codes_and_wordings_beat_generic_status_codes() -> None:
    # GoDaddy's "IBnnn" codes and Exchange Online's resolver verdicts: the same answer for a
    # synchronous reply (the sender) as for the DSN that carries it.
    assert classify("5.1.1", "550 5.1.1 <k@example.com> - 192.0.2.1 has sent to too many "
                    "recipients this hour. IB607 <http://x.co/rlbounce>") == ("soft", "toomanyconn")
    assert classify("5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not "
                    "found by SMTP address lookup") == ("hard", "userunknown")


def test_provider_codes_name_the_reason_with_every_family_row_off() -> None:
    # Exchange 2000/2003's IMS diagnostic code, Spectrum's AUP numbers: facts of the product
    # or the provider, whichever MTA relays the report (generic layer, not a family row).
    with rows_disabled(FAMILY_ROWS):
        assert classify(None, "The recipient name is not recognized MSEXCH:IMS:ACME:HQ:MX01 "
                        "0 (000C05A6) Unknown Recipient") == ("hard", "userunknown")
        assert classify("5.1.0", "550 5.1.0 <a@example.org> sender rejected. Please see "
                        "https://www.spectrum.net/support for more information. AUP#In-1310"
                        ) == ("soft", "toomanyconn")
        assert classify("5.0.0", "550 5.0.0 rejected AUP#O-1530") == ("soft", "mesgtoobig")
        # An AUP number outside Spectrum's list says nothing: the status code stands.
        assert classify("5.1.0", "550 5.1.0 sender rejected AUP#In-9999")[1] != "toomanyconn"


def test_provider_reply_tables_need_the_provider_codes_and_name() -> None:
    with rows_disabled(FAMILY_ROWS):
        # Cox's AUP code, Orange / La Poste's codes (an undocumented cause: "undefined")
        assert classify("5.1.0", "550 5.1.0 <b@example.com> sender rejected. Refer to Error "
                        "Codes section at https://www.cox.com/ AUP#CDRBL")[1] == "blocked"
        assert classify("5.5.0", "550 5.5.0 Le compte du destinataire est bloque. The "
                        "recipient account is blocked. LPN007_426")[1] == "suspend"
        assert classify("4.2.1", "421 4.2.1 Service refuse. Veuillez essayer plus tard. "
                        "LPN006_107")[1] == "undefined"
        # Microsoft's numbered refusals, only in a reply that shows it is Microsoft's
        ms = ("451 4.7.650 The mail server [192.0.2.25] has been temporarily rate limited due "
              "to IP reputation. For e-mail delivery information, see https://postmaster."
              "live.com (S3113)")
        assert classify("4.7.650", ms)[1] == "blocked"
        # Everybody's words ("user unknown") are not read as Microsoft's documented text
        # in somebody else's reply (a dovecot / Postfix report's own verdict stands).
        assert vendor_reason("550 5.1.1 <n@example.jp>... User Unknown") is None
        assert vendor_reason("550 5.1.1 <n@example.com> User unknown; outlook.com") == (
            "userunknown")
        assert classify("5.0.0", "554 Host network not allowed - https://community.mimecast."
                        "com/docs/DOC-1369#554")[1] == "policyviolation"
        assert classify("5.0.0", "550 DMARC check failed. http://service.mail.qq.com/cgi-bin/"
                        "help?subtype=1")[1] == "blocked"


@pytest.mark.parametrize(("host", "provider"), [
    ("smtp.secureserver.net", "godaddy"), ("MAILSTORE1.secureserver.net.", "godaddy"),
    ("lsean.ezweb.ne.jp [192.0.2.1]", "kddi"), ("mx.au.com", "kddi"),
    ("mfsmax.docomo.ne.jp [203.0.113.1]", "nttdocomo"),
    # whole names / whole-label suffixes only
    ("relay.secureserver.net", None), ("ezweb.ne.jp", None), ("mx.nau.com", None),
    ("docomo.ne.jp", None), ("", None), (None, None),
])
def test_provider_hosts_match_whole_names(host: str | None, provider: str | None) -> None:
    assert provider_of_host(host) == provider


def test_host_tables_read_everybodys_words_only_from_the_providers_host() -> None:
    # KDDI: no address before "User unknown" means the recipient's filter refused the sender
    assert host_reason("lsean.ezweb.ne.jp", "5.0.0", "550 : User unknown") == "filtered"
    assert host_reason("mx.au.com", "5.1.1", "550 <k@au.com>: User unknown") == "userunknown"
    assert host_reason("mx.example.net", "5.0.0", "550 : User unknown") is None
    # NTT DOCOMO: the same "550 Unknown user" by status, then by the command it answered
    unknown = "550 Unknown user k@docomo.ne.jp"
    assert host_reason("mfsmax.docomo.ne.jp", "5.2.0", unknown) == "filtered"
    assert host_reason("mfsmax.docomo.ne.jp", "5.1.1", unknown) == "userunknown"
    assert host_reason("mfsmax.docomo.ne.jp", "5.0.0", unknown, "RCPT") == "userunknown"
    assert host_reason("mfsmax.docomo.ne.jp", "5.0.0", unknown, "DATA") == "rejected"
    assert host_reason("mfsmax.docomo.ne.jp", "5.0.0", unknown, "MAIL") is None
    # Postfix wraps "(in reply to end of DATA command)" across lines; the command still counts
    assert command_from_text(f"said: {unknown} (in reply to\n    end of DATA command)") == "DATA"
    assert host_reason("mfsmax.docomo.ne.jp", "5.0.0", "552 Too many recipients") == (
        "toomanyconn")
    assert host_reason("mx.example.net", "5.0.0", unknown, "DATA") is None
    # GoDaddy: its code first, then its texts; the texts mean nothing from other hosts
    assert host_reason("smtp.secureserver.net", "5.2.1", "550 5.2.1 Account disabled") == (
        "suspend")
    assert host_reason("smtp.secureserver.net", "5.0.0", "550 Account storage limit IB112") == (
        "blocked")
    assert host_reason("mx.example.net", "5.2.1", "550 5.2.1 Account disabled") is None
    # I.UA's error page link names the provider wherever the reply comes from
    assert vendor_reason("550 see http://mail.i.ua/err/4") == "mailboxfull"
    assert vendor_reason("550 see http://mail.i.ua/err/99") is None


def test_a_providers_host_decides_the_reason_in_a_dsn() -> None:
    # The DSN's Remote-MTA names the provider; with every family row off, the provider's
    # table decides over the generic reading (5.0.0 "User unknown": a filter, elsewhere).
    def dsn(host: str, diag: str, status: str = "5.0.0") -> bytes:
        body = DSN_BODY.replace("Status: 5.1.1\n", f"Status: {status}\nRemote-MTA: dns; {host}\n")
        body = body.replace("550 5.1.1 <nobody@example.com>: user unknown", diag)
        return _msg("From: MAILER-DAEMON@example.net\nSubject: Undelivered Mail\n"
                    "Content-Type: multipart/report; report-type=delivery-status; "
                    'boundary="REAL"\n', body)
    with rows_disabled(FAMILY_ROWS):
        said = "550 <nobody@example.com>: User unknown"
        kddi = parse_bounce(dsn("lsean.ezweb.ne.jp", said)).recipients[0]
        other = parse_bounce(dsn("mx.example.jp", said)).recipients[0]
        assert (kddi.kind, kddi.reason) == ("hard", "userunknown")
        assert (other.kind, other.reason) == ("soft", "filtered")
        gd = parse_bounce(dsn("smtp.secureserver.net", "553 5.7.1 http://www.spamhaus.org/"
                              "query/bl?ip=192.0.2.7", "5.7.1")).recipients[0]
        assert gd.reason == "blocked"


def test_provider_tables_name_only_sisimais_reasons() -> None:
    # Sisimai::Reason->index (4.25) plus "undefined"; a typo in a table would be a new reason
    vocabulary = {
        "blocked", "contenterror", "exceedlimit", "expired", "filtered", "hasmoved",
        "hostunknown", "mailboxfull", "mailererror", "mesgtoobig", "networkerror",
        "notaccept", "onhold", "rejected", "norelaying", "spamdetected", "virusdetected",
        "policyviolation", "securityerror", "suspend", "systemerror", "systemfull",
        "toomanyconn", "userunknown", "syntaxerror", "undefined"}
    used = {row[-1] for table in (_providers.GOOGLE, _providers.MICROSOFT, _providers.MIMECAST,
                                  _providers.TENCENT, _providers.GODADDY_TEXTS,
                                  _providers.KDDI_TEXTS, _providers.NTTDOCOMO_TEXTS,
                                  _providers.SPECTRUM_AUP) for row in table}
    for codes in (_providers.COX_AUP, _providers.FRANCE_PTT, _providers.GODADDY_CODES,
                  _providers.IUA_CODES, _providers.NTTDOCOMO_STATUS,
                  _providers.NTTDOCOMO_COMMAND):
        used |= set(codes.values())
    assert used <= vocabulary, used - vocabulary
    assert {p for _, p in _providers.PROVIDER_HOSTS} == {"godaddy", "kddi", "nttdocomo"}


def test_generic_phrases_for_retries_size_and_command() -> None:
    with rows_disabled(FAMILY_ROWS):
        assert classify(None, "Delivery failed 3 attempts") == ("soft", "expired")
        assert classify(None, "User mailbox exceeds allowed size") == ("soft", "mailboxfull")
        assert classify(None, "This mail message has exceeded the maximum incoming message "
                        "size.") == ("soft", "mesgtoobig")
        # "SMTP:RCPT host ..." names the command, so a "no such user" is the RCPT verdict.
        assert classify("5.3.0", "SMTP:RCPT host 192.0.2.7: 553 5.3.0 <u@example.com>... No "
                        "such user here") == ("hard", "userunknown")


def test_local_delivery_agent_verdict_is_used() -> None:
    # Sendmail wrapped mail.local's "unknown user" in a generic 5.5.0 report.
    body = ("   ----- The following addresses had permanent fatal errors -----\n"
            "<bob@example.net>\n\n   ----- Transcript of session follows -----\n"
            "mail.local: unknown user: bob\n554 <bob@example.net>... Service unavailable\n")
    raw = _msg("From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.net>\n"
               "Subject: Returned mail: Service unavailable\n", body)
    [r] = parse_bounce(raw).recipients
    assert (r.address, r.kind, r.reason) == ("bob@example.net", "hard", "userunknown")


def test_userunknown_text_without_rcpt_is_filtered_as_sisimai_does() -> None:
    # After DATA a "no such user" is often a content filter in disguise (Sisimai's rule).
    assert classify(None, "This user doesn't have a example.com account") == (
        "soft", "filtered")
    assert classify("5.1.1", "550 5.1.1 user unknown", command="RCPT") == (
        "hard", "userunknown")


def test_bare_userunknown_verdict_is_the_reporting_mta_own() -> None:
    # "Unknown user: rcpt" (IMail, SMTP32): no reply code, no command, nothing relayed.
    assert classify(None, "Unknown user") == ("hard", "userunknown")
    # A relayed reply with the same words stays Sisimai's "filtered" (no command named).
    assert classify(None, "550 Unknown user") == ("soft", "filtered")
    assert classify(None, "Unknown user; mailbox moved to another host") != (
        "hard", "userunknown")


@pytest.mark.parametrize("pattern", [f.detect for f in FAMILIES]
                         + [f.end for f in FAMILIES if f.end is not None] + [ORIGINAL_MARKERS],
                         ids=lambda p: p.pattern[:30])
def test_prefilter_never_hides_a_match(pattern) -> None:
    pre = Prefiltered(pattern)
    for eml in sorted(GOLDEN.glob("*/*.eml")):
        text = eml.read_bytes().decode("utf-8", "replace")
        for chunk in (text, text.upper(), text.lower()):
            assert bool(pre.search(chunk)) == bool(pattern.search(chunk)), eml


@pytest.mark.parametrize("reason", sorted(_phrases.REGEX))
def test_phrase_regex_prefilter_agrees_with_the_whole_pattern(reason: str) -> None:
    # classify's phrase alternations run behind literal pre-checks (PhraseRegex): on every
    # line of every golden sample, and on a text made of each alternative's own literal
    # runs, the answer is the plain pattern's.
    import re

    whole = re.compile(_phrases.REGEX[reason], re.X)
    split = PhraseRegex(_phrases.REGEX[reason])
    texts = [" ".join(split.needles)]
    for eml in sorted(GOLDEN.glob("*/*.eml")):
        texts.extend(eml.read_bytes().decode("utf-8", "replace").lower().splitlines())
    for text in texts:
        expected = bool(whole.search(text))
        assert split.search(text) == expected, (reason, text)
    assert split.rest is not None or split.needles  # every alternative is covered


def test_phrase_regex_gates_need_a_literal_to_run() -> None:
    split = PhraseRegex(r"""(?>
         user[ ]unknown[ ]here   # one alternative with a run
        |no[ ](?:such|one)       # one without: always run
    )""")
    assert split.needles == ("user unknown here",)
    assert split.search("550 user unknown here") and split.search("no such user")
    assert not split.search("550 user unknown")


def test_needles_are_literal_runs_every_match_contains() -> None:
    import re

    rx = re.compile(r"^Hi\. This is the qmail|could not be delivered\. This\s+is a"
                    r"|foo(?:bar)?bazz|x?yzzyq", re.I)
    # Escaped punctuation is literal; \s, optional items and groups end a run.
    assert needles(rx) == ("hi. this is the qmail", "could not be delivered. this", "bazz",
                           "yzzyq")
    assert needles(re.compile(r"a|bcdef", re.I)) is None  # "a" is too short to pre-check


def test_google_dns_wordings_and_null_mx_name_the_reason() -> None:
    # Google's reports carry "4.0.0" or nothing; the wording says which DNS failure it was.
    nx = ("DNS Error: 80335577 DNS type 'mx' lookup of example.jp responded with code "
          "NXDOMAIN Domain name not found: example.jp")
    assert classify("4.0.0", nx, "failed") == ("soft", "networkerror")
    assert classify(None, "The recipient server did not accept our requests to connect.",
                    "failed")[1] == "expired"
    # RFC 7505: a null MX means the domain takes no mail, whoever reports it.
    assert classify("5.1.10", "556 5.1.10 Recipient address rejected: Domain example.org "
                    "does not accept mail (null MX)", "failed")[1] == "notaccept"


# --- the generic layer: shapes that need no family row ------------------------------------
def _text_bounce(body: str, subject: str = "Undeliverable Mail") -> tuple:
    raw = _msg(f"From: postmaster@mx.example.net\nTo: sender@example.org\nSubject: {subject}\n",
               body)
    with rows_disabled(FAMILY_ROWS):
        report = parse_bounce(raw)
    return tuple((r.address, r.status, r.reason) for r in report.recipients)


def test_generic_verdict_before_the_address() -> None:
    assert _text_bounce("Unknown user: bob@example.com\n\n\nOriginal message follows.\n") == (
        ("bob@example.com", None, "userunknown"),)  # a bare verdict: the MTA's own (as
    # Sisimai's IMailServer module reads this shape; a relayed "550 ..." stays "filtered")


def test_generic_transcript_gives_recipient_reply_and_command() -> None:
    body = ("   ----- Transcript of session follows -----\n... while talking to mx.example.com.:\n"
            ">>> MAIL From:<sender@example.org>\n<<< 250 ok\n"
            ">>> RCPT To:<bob@example.com>\n<<< 550 5.1.1 <bob@example.com>... User unknown\n")
    # The RCPT command makes "user unknown" a verdict on the address (userunknown, not
    # filtered); the MAIL FROM line names no recipient.
    assert _text_bounce(body, "Returned mail: User unknown") == (
        ("bob@example.com", "5.1.1", "userunknown"),)
    body = ("----- The following addresses had permanent fatal errors -----\n"
            ">>> bob@example.com <bob@example.com>\n\n"
            "    ----- Transcript of session follows -----\n"
            "550 5.1.1 <bob@example.com>... User Unknown\n")
    assert _text_bounce(body, "Returned mail: see transcript for details") == (
        ("bob@example.com", "5.1.1", "userunknown"),)


def test_generic_reply_elsewhere_in_the_section_explains_a_bare_address() -> None:
    body = ("The following address failed:\nbob@example.com\n\n\n-------server message\n"
            "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown\n")
    assert _text_bounce(body, "failure notice") == (("bob@example.com", "5.1.1", "userunknown"),)


def test_generic_quoted_header_block_is_not_a_recipient() -> None:
    body = ("Your message\n\n  To:      list@example.org\n  Subject: hello\n"
            "  Sent:    Fri, 4 Oct 2002 17:10:56 -0400\n\n"
            "did not reach the following recipient(s):\n\n"
            "c=US;a= ;p=ORG;o=GW;dda:SMTP=bob@example.com; on Fri, 4 Oct 2002 17:12:28 -0400\n"
            "    The recipient name is not recognized\n")
    assert [a for a, _, _ in _text_bounce(body)] == ["bob@example.com"]


def test_generic_layer_never_names_the_bounce_own_recipient() -> None:
    # The bounce's To: is the original's sender; a "<words>: address" line naming it (or
    # an "Original Sender:" line) is not a failed recipient.
    body = ("Could not be delivered because of\n\n550 5.1.1 User unknown\n\n"
            "The following recipients were affected:\n    bob@example.com\n\n"
            "Notify: sender@example.org\nOriginal Sender:    <someone@example.org>\n")
    assert _text_bounce(body) == (("bob@example.com", "5.1.1", "userunknown"),)


@pytest.mark.parametrize("marker", ["-----Mensaje original-----", "---- Ursprüngliche Nachricht ----",
                                    "-------- Message d'origine --------",
                                    "----- Исходное сообщение -----", "----- 元のメッセージ -----"])
def test_localised_original_message_boundary_ends_the_error_section(marker: str) -> None:
    # The quoted original's "To:" in another language ("Para:", "An:") is not a recipient.
    body = (f"Unknown user: bob@example.com\n\n{marker}\nDe: someone@example.org\n"
            "Para: carol@example.com\nAsunto: hola\n")
    assert [a for a, _, _ in _text_bounce(body)] == ["bob@example.com"]
