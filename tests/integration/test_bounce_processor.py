"""The bounce processor's Lambda path on real AWS APIs (moto's server): a DSN stored in S3 and
announced by the S3 or SES event Lambda really receives (samples in events/) becomes DynamoDB
records and, for hard bounces and complaints, a suppression. Nothing is dropped: what cannot be
parsed, matched or trusted is recorded with its S3 key.
"""

from __future__ import annotations

import copy
import dataclasses
import secrets
import time

import boto3
import pytest

from outpost.bootstrap import message_store, suppression_store
from outpost_local.mx import build_dsn
from outpost_local.stack import SENDING_DOMAIN
from tests.conftest import load_event

pytestmark = pytest.mark.timeout(120)


def _sent_and_received(api, local_stack, local: str):
    addr = f"{local}@accept.test"
    status, res = api.call("POST", "/v1/messages", {
        "from": f"shop@{SENDING_DOMAIN}", "to": addr, "subject": f"hello {local}", "text": "hi"})
    assert status == 202, res
    api.wait_for(res["id"], lambda b: b["recipients"][0]["state"] == "delivered")
    server = local_stack.mx["accept.test"].server
    received = next(r for r in reversed(server.received) if addr in r.rcpt_tos)
    return res["id"], addr, received


def _s3_event(local_stack, key: str) -> dict:
    event = load_event("s3_inbound.json")
    rec = event["Records"][0]["s3"]
    rec["bucket"]["name"] = local_stack.env["OUTPOST_BUCKET"]
    rec["bucket"]["arn"] = f"arn:aws:s3:::{local_stack.env['OUTPOST_BUCKET']}"
    rec["object"]["key"] = key.replace("@", "%40")  # S3 URL-encodes keys in events
    return event


def _deliver_to_s3(local_stack, raw: bytes) -> str:
    key = f"inbound/s3/{time.strftime('%Y/%m/%d')}/{secrets.token_hex(8)}@x.eml"
    boto3.client("s3").put_object(Bucket=local_stack.env["OUTPOST_BUCKET"], Key=key, Body=raw)
    return key


def _invoke(local_stack, event: dict) -> dict:
    return local_stack.functions["BounceProcessorFunction"].invoke(event)


def test_dsn_from_s3_event_is_recorded_once_and_soft_bounce_does_not_suppress(api, local_stack):
    mid, addr, received = _sent_and_received(api, local_stack, "fullbox")
    dsn = build_dsn(received, addr, reporting_mta="mx.accept.test", status="5.2.2",
                    diagnostic="smtp; 552 5.2.2 <addr>: Mailbox full")
    key = _deliver_to_s3(local_stack, dsn)
    first = _invoke(local_stack, _s3_event(local_stack, key))
    assert first["results"][0]["result"] == "matched"
    assert first["results"][0]["recipients"][0]["new"] is True
    again = _invoke(local_stack, _s3_event(local_stack, key))  # S3 redelivers: recorded once
    assert again["results"][0]["recipients"][0]["new"] is False
    stored = message_store().load(mid)
    assert len(stored.bounces) == 1
    b = stored.bounces[0]
    assert (b.status, b.kind, b.reason, b.s3_key) == ("5.2.2", "soft", "mailboxfull", key)
    assert stored.recipients[0].state == "bounced"
    assert suppression_store().get(addr) is None  # soft: may work later


def test_ses_receipt_event_hard_bounce_suppresses(api, local_stack):
    mid, addr, received = _sent_and_received(api, local_stack, "gone")
    dsn = build_dsn(received, addr, reporting_mta="mx.accept.test", status="5.1.1")
    ses_id = secrets.token_hex(20)
    boto3.client("s3").put_object(Bucket=local_stack.env["OUTPOST_BUCKET"], Key=f"inbound/ses/{ses_id}", Body=dsn)
    event = load_event("ses_receipt.json")
    event["Records"][0]["ses"]["mail"]["messageId"] = ses_id
    event["Records"][0]["ses"]["receipt"]["recipients"] = [received.mail_from]
    out = _invoke(local_stack, event)
    assert out["results"][0]["result"] == "matched"
    supp = suppression_store().get(addr)
    assert supp and supp.reason == "userunknown" and supp.message_id == mid


def test_forged_return_path_is_recorded_unverified_and_suppresses_nobody(api, local_stack):
    mid, addr, received = _sent_and_received(api, local_stack, "victim")
    local, _, domain = received.mail_from.rpartition("@")
    head, _, mac = local.rpartition("-")
    forged_mac = "".join("a" if c != "a" else "b" for c in mac)
    forged = dataclasses.replace(received, mail_from=f"{head}-{forged_mac}@{domain}")
    dsn = build_dsn(forged, addr, status="5.1.1")
    # No ENVID or original headers to fall back on: the token is all there is.
    dsn = dsn.replace(f"Original-Envelope-Id: {mid}\r\n".encode(), b"")
    key = _deliver_to_s3(local_stack, dsn)
    out = _invoke(local_stack, _s3_event(local_stack, key))
    assert out["results"][0]["result"] == "unverified"
    assert suppression_store().get(addr) is None
    assert message_store().load(mid).recipients[0].state == "delivered"
    assert any(o.s3_key == key for o in message_store().orphans("unverified"))


def test_unmatched_and_unparsed_mail_is_kept_with_its_s3_key(local_stack):
    stranger = (b"From: MAILER-DAEMON@elsewhere.test\r\nTo: someone@bounces.outpost.test\r\n"
                b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
                b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
                b"--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
                b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; elsewhere.test\r\n\r\n"
                b"Final-Recipient: rfc822; who@elsewhere.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n")
    key = _deliver_to_s3(local_stack, stranger)
    assert _invoke(local_stack, _s3_event(local_stack, key))["results"][0]["result"] == "unmatched"
    assert any(o.s3_key == key for o in message_store().orphans("unmatched"))

    spam = b"From: promo@spam.test\r\nTo: x@bounces.outpost.test\r\nSubject: Buy now\r\n\r\nCheap!\r\n"
    key2 = _deliver_to_s3(local_stack, spam)
    assert _invoke(local_stack, _s3_event(local_stack, key2))["results"][0]["result"] == "unparsed"
    assert any(o.s3_key == key2 for o in message_store().orphans("unparsed"))


def test_delayed_dsn_is_a_deferral_not_a_bounce(api, local_stack):
    mid, addr, received = _sent_and_received(api, local_stack, "slowpoke")
    dsn = build_dsn(received, addr, status="4.4.7", action="delayed",
                    diagnostic="smtp; 451 4.4.1 <addr>: connection timed out")
    key = _deliver_to_s3(local_stack, dsn)
    out = _invoke(local_stack, _s3_event(local_stack, key))
    assert out["results"][0]["recipients"][0]["type"] == "delay"
    stored = message_store().load(mid)
    assert stored.recipients[0].state == "delivered"
    assert stored.bounces[0].type == "delay"
    assert suppression_store().get(addr) is None


def test_missing_object_is_reported_not_raised(local_stack):
    event = _s3_event(local_stack, "inbound/s3/nothing-here.eml")
    assert _invoke(local_stack, copy.deepcopy(event))["results"][0]["result"] == "missing"


def test_feedback_report_is_a_complaint_that_suppresses(api, local_stack):
    mid, addr, received = _sent_and_received(api, local_stack, "annoyed")
    # A feedback loop quotes the original as delivered: the final MTA added its Return-Path.
    original = f"Return-Path: <{received.mail_from}>\r\n" + received.data.decode()
    arf = (
        "From: feedback@mailbox-provider.test\r\n"
        "To: abuse@bounces.outpost.test\r\n"
        "Subject: FW: complaint\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="arf"\r\n\r\n'
        "--arf\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        "--arf\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: SomeProvider/1.0\r\nVersion: 1\r\n"
        f"Original-Rcpt-To: <{addr}>\r\nReported-Domain: {SENDING_DOMAIN}\r\n\r\n"
        "--arf\r\nContent-Type: message/rfc822\r\n\r\n" + original + "\r\n--arf--\r\n"
    ).encode()
    key = _deliver_to_s3(local_stack, arf)
    out = _invoke(local_stack, _s3_event(local_stack, key))
    assert out["results"][0]["result"] == "matched", out
    assert out["results"][0]["recipients"][0]["type"] == "complaint"
    assert message_store().load(mid).recipients[0].state == "complained"
    supp = suppression_store().get(addr)
    assert supp and supp.source == "complaint"


def test_report_matched_only_by_message_id_acts_on_nobody(api, local_stack):
    """Every recipient sees the message id (Message-ID header), so one recipient could forge a
    DSN against another: without our verified token it is recorded, and changes nothing."""
    status, res = api.call("POST", "/v1/messages", {
        "from": f"shop@{SENDING_DOMAIN}", "to": ["mallory@accept.test", "victim2@accept.test"],
        "subject": "to two", "text": "hi"})
    assert status == 202
    mid = res["id"]
    api.wait_for(mid, lambda b: all(r["state"] == "delivered" for r in b["recipients"]))
    forged = (
        "From: MAILER-DAEMON@accept.test\r\nTo: abuse@bounces.outpost.test\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
        "--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; accept.test\r\nOriginal-Envelope-Id: {mid}\r\n\r\n"
        "Final-Recipient: rfc822; victim2@accept.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n--b--\r\n").encode()
    key = _deliver_to_s3(local_stack, forged)
    out = _invoke(local_stack, _s3_event(local_stack, key))
    assert out["results"][0]["result"] == "matched"
    stored = message_store().load(mid)
    by = {r.address: r for r in stored.recipients}
    assert by["victim2@accept.test"].state == "delivered"
    assert suppression_store().get("victim2@accept.test") is None
    assert [b.verified for b in stored.bounces] == [False]


def _service(local_stack, **kw):
    from outpost.bootstrap import verp_key
    from outpost.bounces.service import BounceService
    from outpost.config import settings

    return BounceService(store=message_store(), suppressions=suppression_store(),
                         verp_key=verp_key(), bounce_domain=settings().bounce_domain, **kw)


def _orphan(kind: str, key: str) -> dict:
    return next(o.as_dict() for o in message_store().orphans(kind, limit=1000) if o.s3_key == key)


def test_a_parser_failure_is_logged_with_its_stack_counted_and_kept_unparsed(local_stack, caplog):
    # Issue 8 item 4: the parser's own exceptions were swallowed.  The parser is passed in
    # (a side effect like any other); this one fails the way a parser bug does.
    def failing_parser(raw: bytes):
        raise AttributeError("'Header' object has no attribute 'lower'")

    counts: list[tuple[str, int]] = []
    service = _service(local_stack, parse=failing_parser, count=lambda name, n: counts.append((name, n)))
    key = _deliver_to_s3(local_stack, b"From: MAILER-DAEMON@elsewhere.test\r\n\r\nfailed\r\n")
    with caplog.at_level("ERROR", logger="outpost.bounces"):
        assert service.process(key, [])["result"] == "unparsed"
    assert ("BounceParserError", 1) in counts and ("BounceUnparsed", 1) in counts
    failure = next(r for r in caplog.records if r.getMessage() == "bounce parser failed")
    assert failure.exc_info and failure.exc_info[0] is AttributeError  # logged with its stack
    assert _orphan("unparsed", key)["parser_error"].startswith("AttributeError: 'Header'")


def test_the_default_parser_reports_its_failures_to_the_service(local_stack):
    # The service's own parser raises (strict) instead of answering "none" silently.
    from outpost.bounces.dsn import parse_bounce

    service = _service(local_stack)
    assert service.parse.func is parse_bounce and service.parse.keywords == {"strict": True}


def test_a_large_inbound_object_is_read_in_part_and_recorded_as_truncated(local_stack):
    # Issue 8 item 2: the whole object was read (then cut at 20 MB) before parsing.  A ranged
    # GET reads MESSAGE_READ_LIMIT bytes; the object stays whole in S3.
    import tracemalloc

    from outpost.bounces.limits import MESSAGE_READ_LIMIT

    report = (b"From: MAILER-DAEMON@elsewhere.test\r\nTo: someone@bounces.outpost.test\r\n"
              b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
              b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
              b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; elsewhere.test\r\n\r\n"
              b"Final-Recipient: rfc822; who@elsewhere.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
              b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: big\r\n\r\n")
    raw = report + (b"x" * 998 + b"\r\n") * 20_000 + b"--b--\r\n"
    key = _deliver_to_s3(local_stack, raw)
    service = _service(local_stack)
    tracemalloc.start()
    try:
        result = service.process(key, [])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result["result"] == "unmatched"  # the report was read: it names who@elsewhere.test
    orphan = _orphan("unmatched", key)
    assert orphan["recipients"] == ["who@elsewhere.test"]
    assert orphan["truncated"] is True and orphan["size"] == len(raw)
    assert peak < 12 * MESSAGE_READ_LIMIT, peak  # not the 20 MB object (was 3 copies of it)
    assert boto3.client("s3").head_object(Bucket=local_stack.env["OUTPOST_BUCKET"],
                                          Key=key)["ContentLength"] == len(raw)


def test_an_empty_inbound_object_is_kept_unparsed(local_stack):
    key = _deliver_to_s3(local_stack, b"")  # no byte 0: S3 answers a ranged GET with 416
    assert _invoke(local_stack, _s3_event(local_stack, key))["results"][0]["result"] == "unparsed"
