"""The local stack's network peers, exercised over real loopback sockets.

DNS is queried with dnspython over UDP and TCP; the MX hosts are driven with aiosmtplib (the
client the sender uses) with real STARTTLS verified against the test CA; Postfix runs as a
private instance (root only) both as an MX and as a relay that produces real DSNs.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
from collections.abc import Callable, Coroutine, Iterator
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any, TypeVar

import aiosmtplib
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.resolver
import pytest

from outpost_local.dns import DnsServer
from outpost_local.lifecycle import free_port
from outpost_local.mx import (
    AcceptThenBounce,
    DataReply,
    DisconnectInData,
    GreetingReply,
    Greylist,
    MailReply,
    MxServer,
    RcptReply,
    RejectUnknown,
    Slow,
    TlsHandshakeFailure,
    build_dsn,
    resolve_via_dns,
)
from outpost_local.pki import TestPki
from outpost_local.postfix import PostfixInstance, postfix_available

pytestmark = pytest.mark.timeout(60)
T = TypeVar("T")

MX_HOST = "127.0.0.21"
MESSAGE = (
    b"From: Sender <app@sender.test>\r\n"
    b"To: bob@a.test\r\n"
    b"Subject: Outpost peer test\r\n"
    b"Message-ID: <peer-test-1@sender.test>\r\n"
    b"\r\n"
    b"Hello over loopback.\r\n"
)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer("127.0.0.53") as server:
        yield server


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def client(
    server: MxServer, tls: ssl.SSLContext | None = None, timeout: float = 5
) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(
        hostname=server.host,
        port=server.port,
        start_tls=tls is not None,
        tls_context=tls,
        timeout=timeout,
        local_hostname="client.test",
    )


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


# -- DNS ------------------------------------------------------------------------------------


def test_dns_answers_mx_a_txt_over_udp_and_tcp(dns_server: DnsServer) -> None:
    dkim_key = "v=DKIM1; k=rsa; p=" + "M" * 400  # longer than one 255-byte string
    dns_server.add("example.test", "MX", (20, "mx2.example.test"))
    dns_server.add("Example.Test", "MX", (10, "mx1.example.test"))
    dns_server.add("mx1.example.test", "A", "127.0.0.21")
    dns_server.add("mx1.example.test", "AAAA", "::1")
    dns_server.add("sel._domainkey.example.test", "TXT", dkim_key)
    dns_server.add("null.test", "MX", (0, "."))
    dns_server.add("alias.example.test", "CNAME", "mx1.example.test")
    dns_server.add("127.0.0.21", "PTR", "mx1.example.test")
    resolver = dns_server.resolver()

    for tcp in (False, True):
        mx = resolver.resolve("EXAMPLE.test", "MX", tcp=tcp)
        assert sorted((r.preference, str(r.exchange)) for r in mx) == [
            (10, "mx1.example.test."),
            (20, "mx2.example.test."),
        ]
        assert [r.address for r in resolver.resolve("mx1.example.test", "A", tcp=tcp)] == [
            "127.0.0.21"
        ]
        assert [r.address for r in resolver.resolve("mx1.example.test", "AAAA", tcp=tcp)] == [
            "::1"
        ]
        txt = resolver.resolve("sel._domainkey.example.test", "TXT", tcp=tcp)[0]
        assert [len(s) for s in txt.strings] == [255, len(dkim_key) - 255]
        assert b"".join(txt.strings).decode() == dkim_key
        null_mx = resolver.resolve("null.test", "MX", tcp=tcp)[0]
        assert (null_mx.preference, str(null_mx.exchange)) == (0, ".")
        alias = resolver.resolve("alias.example.test", "A", tcp=tcp)
        assert [r.address for r in alias] == ["127.0.0.21"]
        assert str(alias.canonical_name) == "mx1.example.test."
        ptr = resolver.resolve("21.0.0.127.in-addr.arpa", "PTR", tcp=tcp)
        assert str(ptr[0]) == "mx1.example.test."

    transports = {(q.name, q.transport) for q in dns_server.queries}
    assert ("example.test.", "udp") in transports and ("example.test.", "tcp") in transports


def test_dns_nxdomain_nodata_and_authority(dns_server: DnsServer) -> None:
    dns_server.add("example.test", "A", "127.0.0.21")
    dns_server.add("_dmarc.mail.example.test", "TXT", "v=DMARC1; p=none")
    for tcp in (False, True):
        query = dns.message.make_query("missing.example.test", "MX")
        send = dns.query.tcp if tcp else dns.query.udp
        reply = send(query, dns_server.host, port=dns_server.port, timeout=2)
        assert reply.rcode() == dns.rcode.NXDOMAIN
        assert reply.flags & dns.flags.AA
        # Name exists with another type: NOERROR with no answer (NODATA).
        reply = send(dns.message.make_query("example.test", "MX"), dns_server.host,
                     port=dns_server.port, timeout=2)
        assert reply.rcode() == dns.rcode.NOERROR and not reply.answer
        # Empty non-terminal (RFC 8020): mail.example.test has a name below it.
        reply = send(dns.message.make_query("mail.example.test", "A"), dns_server.host,
                     port=dns_server.port, timeout=2)
        assert reply.rcode() == dns.rcode.NOERROR and not reply.answer

    resolver = dns_server.resolver()
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("missing.example.test", "MX")
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("example.test", "MX")

    dns_server.remove("example.test", "A")
    with pytest.raises(dns.resolver.NoAnswer):  # still an empty non-terminal
        resolver.resolve("example.test", "A")
    dns_server.remove("_dmarc.mail.example.test")
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("example.test", "A")


def test_dns_servfail_and_timeout(dns_server: DnsServer) -> None:
    dns_server.add("broken.test", "MX", (10, "mx.broken.test"))
    dns_server.set_servfail("BROKEN.test")
    dns_server.set_timeout("silent.test")
    for send in (dns.query.udp, dns.query.tcp):
        reply = send(dns.message.make_query("broken.test", "MX"), dns_server.host,
                     port=dns_server.port, timeout=2)
        assert reply.rcode() == dns.rcode.SERVFAIL
        with pytest.raises(dns.exception.Timeout):
            send(dns.message.make_query("silent.test", "MX"), dns_server.host,
                 port=dns_server.port, timeout=0.3)

    with pytest.raises(dns.resolver.NoNameservers):  # dnspython's verdict on SERVFAIL
        dns_server.resolver().resolve("broken.test", "MX")
    with pytest.raises(dns.resolver.LifetimeTimeout):
        dns_server.resolver(timeout=0.3).resolve("silent.test", "MX")

    dns_server.set_servfail("broken.test", on=False)
    dns_server.set_timeout("silent.test", on=False)
    assert str(dns_server.resolver().resolve("broken.test", "MX")[0].exchange) == "mx.broken.test."
    with pytest.raises(dns.resolver.NXDOMAIN):
        dns_server.resolver().resolve("silent.test", "MX")


def test_dns_truncates_big_udp_answers_and_client_retries_over_tcp(
    dns_server: DnsServer,
) -> None:
    for i in range(60):
        dns_server.add("many.test", "A", f"10.0.0.{i}")
    plain = dns.message.make_query("many.test", "A", use_edns=False)
    reply = dns.query.udp(plain, dns_server.host, port=dns_server.port, timeout=2)
    assert reply.flags & dns.flags.TC and not reply.answer

    answer = dns_server.resolver().resolve("many.test", "A")
    assert len(answer) == 60
    assert [q.transport for q in dns_server.queries if q.name == "many.test."][-1] == "tcp"


# -- MX: STARTTLS and the basics ------------------------------------------------------------


def test_mx_accepts_over_verified_starttls_and_records_the_envelope(
    pki: TestPki, mx_factory: Callable[..., MxServer]
) -> None:
    mx = mx_factory(MX_HOST, 0, None, pki.server_context("mx.test", MX_HOST))

    async def talk() -> tuple[str, str, dict[str, str]]:
        smtp = client(mx, pki.client_context())
        await smtp.connect()
        await smtp.ehlo()  # the EHLO after STARTTLS (RFC 3207 §4.2)
        cipher = smtp.transport.get_extra_info("cipher") if smtp.transport else None
        assert cipher is not None  # STARTTLS really happened
        assert smtp.supports_extension("dsn") and smtp.supports_extension("smtputf8")
        assert not smtp.supports_extension("starttls")  # not re-offered after STARTTLS
        await smtp.mail("bounce+Tok3n@bounces.test", options=["ENVID=MsG-0042", "RET=HDRS"])
        await smtp.rcpt("bob@a.test", options=["NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;Bob@A.test"])
        data_reply = await smtp.data(MESSAGE)
        extensions = dict(smtp.esmtp_extensions)
        await smtp.quit()
        return str(data_reply.code), data_reply.message, extensions

    code, text, _ = run(talk())
    assert code == "250" and text.startswith("2.0.0 Ok: queued as ")
    [received] = mx.wait_for(1)
    assert received.tls is True
    assert received.mail_from == "bounce+Tok3n@bounces.test"
    assert received.rcpt_tos == ["bob@a.test"]
    assert received.data == MESSAGE
    assert received.helo == "client.test"
    assert text.endswith(received.queue_id)
    # Parameter values keep their case: the sender matches ENVID/ORCPT verbatim.
    assert received.mail_param("ENVID") == "MsG-0042"
    assert received.rcpt_param("bob@a.test", "ORCPT") == "rfc822;Bob@A.test"
    assert received.rcpt_param("bob@a.test", "NOTIFY") == "FAILURE,DELAY"
    commands = [c.split()[0] for c, _ in mx.log]
    assert commands == ["CONNECT", "EHLO", "STARTTLS", "EHLO", "MAIL", "RCPT", "DATA", ".", "QUIT"]


def test_mx_untrusted_or_expired_certificate_fails_verification(
    pki: TestPki, mx_factory: Callable[..., MxServer]
) -> None:
    for ctx in (pki.untrusted_server_context("mx.test", MX_HOST),
                pki.expired_server_context("mx.test", MX_HOST)):
        mx = mx_factory(MX_HOST, 0, None, ctx)

        async def talk(server: MxServer = mx) -> None:
            smtp = client(server, pki.client_context())
            await smtp.connect()

        with pytest.raises((ssl.SSLCertVerificationError, aiosmtplib.SMTPException)) as info:
            run(talk())
        assert "certificate" in str(info.value).lower()
        assert mx.received == []


def test_mx_tls_handshake_failure(pki: TestPki, mx_factory: Callable[..., MxServer]) -> None:
    mx = mx_factory(MX_HOST, 0, TlsHandshakeFailure(), pki.server_context("mx.test", MX_HOST))

    async def talk() -> None:
        smtp = client(mx, pki.client_context())
        await smtp.connect()

    with pytest.raises(ssl.SSLError, match="(?i)alert handshake failure"):
        run(talk())
    assert mx.replies("STARTTLS") == ["220 2.0.0 Ready to start TLS"]


def test_mx_without_tls_and_with_require_starttls(
    pki: TestPki, mx_factory: Callable[..., MxServer]
) -> None:
    plain = mx_factory(MX_HOST, 0, None, None)
    strict = mx_factory(MX_HOST, 0, None, pki.server_context("mx.test"), require_starttls=True)

    async def talk(server: MxServer) -> tuple[bool, int]:
        smtp = client(server)
        await smtp.connect()
        await smtp.ehlo()
        offers_tls = smtp.supports_extension("starttls")
        try:
            await smtp.mail("a@sender.test")
            code = 250
        except aiosmtplib.SMTPSenderRefused as e:
            code = e.code
        await smtp.quit()
        return offers_tls, code

    assert run(talk(plain)) == (False, 250)
    assert run(talk(strict)) == (True, 530)


# -- MX: scripted behaviours ----------------------------------------------------------------


def test_reject_unknown_gives_550_5_1_1(mx_factory: Callable[..., MxServer]) -> None:
    mx = mx_factory(MX_HOST, 0, RejectUnknown({"bob", "Carol@A.test"}), None)

    async def talk() -> dict[str, tuple[int, str]]:
        smtp = client(mx)
        await smtp.connect()
        await smtp.mail("app@sender.test")
        out = {}
        for rcpt in ("BOB@a.test", "carol@a.test", "mallory@a.test"):
            try:
                reply = await smtp.rcpt(rcpt)
                out[rcpt] = (reply.code, reply.message)
            except aiosmtplib.SMTPRecipientRefused as e:
                out[rcpt] = (e.code, e.message)
        await smtp.data(MESSAGE)
        await smtp.quit()
        return out

    replies = run(talk())
    assert replies["BOB@a.test"][0] == 250
    assert replies["carol@a.test"][0] == 250
    assert replies["mallory@a.test"] == (
        550, "5.1.1 <mallory@a.test>: Recipient address rejected: User unknown"
    )
    assert mx.wait_for(1)[0].rcpt_tos == ["BOB@a.test", "carol@a.test"]


def test_greylist_451_then_accepts_keyed_on_sender_domain(
    mx_factory: Callable[..., MxServer],
) -> None:
    now = [1000.0]
    mx = mx_factory(MX_HOST, 0, Greylist(delay_seconds=60, clock=lambda: now[0]), None)

    async def attempt(sender: str) -> int:
        smtp = client(mx)
        await smtp.connect()
        await smtp.mail(sender)
        try:
            code = (await smtp.rcpt("bob@a.test")).code
            await smtp.data(MESSAGE)
        except aiosmtplib.SMTPRecipientRefused as e:
            assert e.message == "4.7.1 Greylisted, please retry"
            code = e.code
        await smtp.quit()
        return code

    assert run(attempt("b+attempt1@bounces.test")) == 451
    now[0] += 30
    assert run(attempt("b+attempt2@bounces.test")) == 451  # too early
    now[0] += 31
    # A different VERP local part, same domain: the triplet matches, so it is accepted.
    assert run(attempt("b+attempt3@bounces.test")) == 250
    assert run(attempt("other@elsewhere.test")) == 451  # a new triplet
    assert len(mx.received) == 1


def test_scripted_greeting_mail_rcpt_and_data_replies(mx_factory: Callable[..., MxServer]) -> None:
    busy = mx_factory(MX_HOST, 0, GreetingReply(421, "4.3.2 Service not available"), None)
    refuse = mx_factory(MX_HOST, 0, GreetingReply(554, "5.7.1 No SMTP service here"), None)
    full = mx_factory(MX_HOST, 0, RcptReply(452, "4.2.2 Mailbox full", only={"bob@a.test"}), None)
    sender = mx_factory(MX_HOST, 0, MailReply(451, "4.3.0 Try later", times=1), None)
    content = mx_factory(MX_HOST, 0, DataReply(554, "5.7.1 Message rejected as spam"), None)

    async def greet(server: MxServer) -> int:
        smtp = client(server)
        try:
            await smtp.connect()
        except aiosmtplib.SMTPConnectResponseError as e:
            return e.code
        return 220

    assert run(greet(busy)) == 421
    assert run(greet(refuse)) == 554

    async def send(server: MxServer, rcpts: list[str]) -> Any:
        smtp = client(server)
        await smtp.connect()
        try:
            return await smtp.sendmail("app@sender.test", rcpts, MESSAGE)
        except aiosmtplib.SMTPResponseException as e:
            return (e.code, e.message)
        finally:
            smtp.close()

    errors, _ = run(send(full, ["bob@a.test", "eve@a.test"]))
    assert (errors["bob@a.test"].code, errors["bob@a.test"].message) == (452, "4.2.2 Mailbox full")
    assert full.wait_for(1)[0].rcpt_tos == ["eve@a.test"]

    assert run(send(sender, ["bob@a.test"])) == (451, "4.3.0 Try later")
    errors, _ = run(send(sender, ["bob@a.test"]))  # times=1: now accepted
    assert errors == {}

    assert run(send(content, ["bob@a.test"])) == (554, "5.7.1 Message rejected as spam")
    assert content.received == []


def test_disconnect_in_data_and_slow_replies(mx_factory: Callable[..., MxServer]) -> None:
    cut = mx_factory(MX_HOST, 0, DisconnectInData(), None)
    slow = mx_factory(MX_HOST, 0, Slow("rcpt", 1.0), None)

    async def send(server: MxServer, timeout: float) -> None:
        smtp = client(server, timeout=timeout)
        await smtp.connect()
        await smtp.sendmail("app@sender.test", ["bob@a.test"], MESSAGE)

    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        run(send(cut, 5))
    assert cut.received == []  # no 250 was sent, so nothing counts as accepted
    assert cut.log[-1] == (".", "<disconnected>")

    with pytest.raises(aiosmtplib.SMTPTimeoutError):
        run(send(slow, 0.3))
    run(send(slow, 5))  # patient enough
    assert len(slow.wait_for(1)) == 1


def test_size_smtputf8_and_dsn_options(mx_factory: Callable[..., MxServer]) -> None:
    small = mx_factory(MX_HOST, 0, None, None, size_limit=100)
    bare = mx_factory(MX_HOST, 0, None, None, smtputf8=False, dsn=False)

    async def probe(server: MxServer) -> dict[str, str]:
        smtp = client(server)
        await smtp.connect()
        await smtp.ehlo()
        ext = dict(smtp.esmtp_extensions)
        smtp.close()
        return ext

    ext = run(probe(small))
    assert ext["size"] == "100" and "dsn" in ext and "smtputf8" in ext
    ext = run(probe(bare))
    assert "size" not in ext and "dsn" not in ext and "smtputf8" not in ext

    async def mail(server: MxServer, options: list[str]) -> int:
        smtp = client(server)
        await smtp.connect()
        try:
            return (await smtp.mail("app@sender.test", options=options)).code
        except aiosmtplib.SMTPSenderRefused as e:
            return e.code
        finally:
            smtp.close()

    assert run(mail(small, ["SIZE=5000"])) == 552
    assert run(mail(small, ["SIZE=50", "ENVID=x1"])) == 250
    assert run(mail(bare, ["ENVID=x1"])) == 555


# -- MX: bounces ----------------------------------------------------------------------------


def _delivery_status(dsn: EmailMessage) -> tuple[Message, list[Message]]:
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    parts = list(dsn.iter_parts())
    status = next(p for p in parts if p.get_content_type() == "message/delivery-status")
    # email parses message/delivery-status into one header block per field group (RFC 3464
    # §2.1): the per-message fields first, then one per recipient.
    payload = status.get_payload()
    assert isinstance(payload, list)
    blocks = [b for b in payload if isinstance(b, Message)]
    assert len(blocks) == len(payload) >= 2
    return blocks[0], blocks[1:]


def test_accept_then_bounce_delivers_an_rfc3464_dsn_to_the_return_path_mx(
    pki: TestPki, dns_server: DnsServer, mx_factory: Callable[..., MxServer]
) -> None:
    bounce_mx = mx_factory("127.0.0.22", 0, None,
                           pki.server_context("mx.bounces.test", "127.0.0.22"))
    dns_server.add("bounces.test", "MX", (10, "mx.bounces.test"))
    dns_server.add("mx.bounces.test", "A", "127.0.0.22")
    bouncer = AcceptThenBounce(
        resolve=resolve_via_dns(dns_server.resolver(), port=bounce_mx.port),
        reporting_mta="mx.a.test",
        tls_context=pki.client_context(),
    )
    mx = mx_factory(MX_HOST, 0, bouncer, None)

    async def send() -> None:
        smtp = client(mx)
        await smtp.connect()
        await smtp.mail("b+Tok3n@bounces.test", options=["ENVID=MsG-0042"])
        await smtp.rcpt("bob@a.test", options=["NOTIFY=FAILURE", "ORCPT=rfc822;Bob@a.test"])
        await smtp.data(MESSAGE)
        await smtp.quit()

    run(send())
    assert len(mx.wait_for(1)) == 1
    [received] = bounce_mx.wait_for(1)
    assert bouncer.errors == []
    assert received.mail_from == ""  # DSNs use the null reverse-path
    assert received.rcpt_tos == ["b+Tok3n@bounces.test"]
    assert received.tls is True

    dsn = parse(received.data)
    assert dsn["Auto-Submitted"] == "auto-replied"
    per_message, per_rcpt = _delivery_status(dsn)
    assert per_message["Reporting-MTA"] == "dns; mx.a.test"
    assert per_message["Original-Envelope-Id"] == "MsG-0042"
    [rcpt] = per_rcpt
    assert rcpt["Final-Recipient"] == "rfc822; bob@a.test"
    assert rcpt["Original-Recipient"] == "rfc822; Bob@a.test"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.1.1"
    assert rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@a.test>: mailbox unavailable"
    headers = next(p for p in dsn.iter_parts()
                   if p.get_content_type() == "text/rfc822-headers")
    assert "Message-ID: <peer-test-1@sender.test>" in headers.get_content()


def test_build_dsn_returns_full_message_when_ret_full() -> None:
    from outpost_local.mx import Received

    received = Received(
        mail_from="b@bounces.test", rcpt_tos=["x@a.test", "y@a.test"], data=MESSAGE,
        peer="127.0.0.1", tls=False, mail_options=["RET=FULL"], rcpt_options=[],
    )
    dsn = parse(build_dsn(received, ["x@a.test", "y@a.test"], status="4.4.7",
                          action="delayed", diagnostic="smtp; 451 4.4.7 <addr>: expired"))
    per_message, per_rcpt = _delivery_status(dsn)
    assert "Original-Envelope-Id" not in per_message
    assert [b["Final-Recipient"] for b in per_rcpt] == ["rfc822; x@a.test", "rfc822; y@a.test"]
    assert {b["Action"] for b in per_rcpt} == {"delayed"}
    original = next(p for p in dsn.iter_parts()
                    if p.get_content_type() == "message/rfc822")
    inner = original.get_content()
    assert isinstance(inner, EmailMessage) and inner["Subject"] == "Outpost peer test"


# -- Postfix --------------------------------------------------------------------------------

_postfix_skip = postfix_available()
postfix = pytest.mark.skipif(_postfix_skip is not None, reason=_postfix_skip or "")


@pytest.mark.postfix
@postfix
def test_postfix_accepts_known_user_over_starttls_and_rejects_unknown(
    pki: TestPki, tmp_path: Path
) -> None:
    host = "127.0.0.31"
    port = free_port(host)
    with PostfixInstance(tmp_path / "pf", host, port, "example.test", {"alice"},
                         pki.cert_files("postfix.test", host)) as pf:

        async def talk() -> tuple[dict[str, aiosmtplib.SMTPResponse], bool]:
            smtp = aiosmtplib.SMTP(hostname=host, port=port, start_tls=True,
                                   tls_context=pki.client_context(), timeout=10)
            await smtp.connect()
            encrypted = smtp.transport is not None and bool(
                smtp.transport.get_extra_info("cipher"))
            errors, _ = await smtp.sendmail(
                "app@sender.test", ["Alice@example.test", "nobody@example.test"], MESSAGE)
            await smtp.quit()
            return dict(errors), encrypted

        errors, encrypted = run(talk())
        assert encrypted
        refused = errors["nobody@example.test"]
        assert refused.code == 550 and refused.message.startswith(
            "5.1.1 <nobody@example.test>: Recipient address rejected")
        [delivered] = pf.wait_delivered(1, mailbox="alice@example.test")
        msg = parse(delivered)
        assert msg["Message-ID"] == "<peer-test-1@sender.test>"
        assert msg["Delivered-To"].lower() == "alice@example.test"
        assert "with ESMTPS" in msg["Received"]
    assert (tmp_path / "pf" / "postfix.log").exists()


def _send_via(host: str, port: int, sender: str, rcpt: str, envid: str) -> None:
    async def talk() -> None:
        smtp = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, timeout=10)
        await smtp.connect()
        await smtp.mail(sender, options=[f"ENVID={envid}"])
        await smtp.rcpt(rcpt, options=["NOTIFY=FAILURE"])
        await smtp.data(MESSAGE)
        await smtp.quit()

    run(talk())


@pytest.mark.postfix
@postfix
def test_postfix_relay_turns_a_550_into_a_dsn_at_the_return_path_mx(
    pki: TestPki, tmp_path: Path, mx_factory: Callable[..., MxServer]
) -> None:
    next_hop = mx_factory("127.0.0.32", 0, RejectUnknown({"bob"}),
                          pki.server_context("mx.a.test", "127.0.0.32"))
    return_path_mx = mx_factory("127.0.0.33", 0, None, None)
    host = "127.0.0.34"
    port = free_port(host)
    with PostfixInstance(
        tmp_path / "relay", host, port, "relay.test", set(), None, hostname="relay.test",
        relay_to=(next_hop.host, next_hop.port),
        routes={"bounces.test": (return_path_mx.host, return_path_mx.port)},
        ca_file=pki.ca_bundle,
    ) as relay:
        _send_via(host, port, "b+Tok3n@bounces.test", "mallory@a.test", "EnV-77")
        try:
            [received] = return_path_mx.wait_for(1, timeout=30)
        except TimeoutError:
            pytest.fail(f"no DSN arrived\n{relay.queue()}\n{relay.log_file.read_text()}")

    # The next hop really refused it, over STARTTLS.
    assert next_hop.replies("RCPT") == [
        "550 5.1.1 <mallory@a.test>: Recipient address rejected: User unknown"]
    assert next_hop.replies("STARTTLS") == ["220 Ready to start TLS"]
    assert received.mail_from == "" and received.rcpt_tos == ["b+Tok3n@bounces.test"]
    dsn = parse(received.data)
    per_message, [rcpt] = _delivery_status(dsn)
    assert per_message["Reporting-MTA"] == "dns; relay.test"
    assert per_message["Original-Envelope-Id"] == "EnV-77"
    assert rcpt["Final-Recipient"] == "rfc822; mallory@a.test"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.1.1"
    assert "550 5.1.1" in rcpt["Diagnostic-Code"]


@pytest.mark.postfix
@postfix
def test_postfix_relay_captures_dsns_to_files(
    tmp_path: Path, mx_factory: Callable[..., MxServer]
) -> None:
    next_hop = mx_factory("127.0.0.35", 0, RejectUnknown(set()), None)
    host = "127.0.0.36"
    port = free_port(host)
    with PostfixInstance(
        tmp_path / "relay", host, port, "relay.test", set(), None, hostname="relay.test",
        relay_to=(next_hop.host, next_hop.port), capture_domains={"bounces.test"},
    ) as relay:
        _send_via(host, port, "b+Other@bounces.test", "who@a.test", "EnV-78")
        [captured] = relay.wait_delivered(1, mailbox="bounces.test", timeout=30)
    dsn = parse(captured)
    assert dsn["Delivered-To"] == "b+Other@bounces.test"
    per_message, [rcpt] = _delivery_status(dsn)
    assert per_message["Original-Envelope-Id"] == "EnV-78"
    assert rcpt["Status"] == "5.1.1"
    # The copy survives the instance in workdir.
    assert any((tmp_path / "relay" / "mail" / "bounces.test").rglob("*/new/*"))
