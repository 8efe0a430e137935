"""The API's pure parts: request validation, cursors, the token bucket, DNS record checks and
the error shape (the routes with in-memory fakes: no sockets)."""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import ValidationError

from outpost.api.auth import KeyRing, TokenBuckets, key_hash
from outpost.api.domains import DomainService
from outpost.api.paging import Cursor, check_key, decode_cursor, encode_cursor
from outpost.errors import InvalidRequestError
from outpost.models import MAX_MESSAGE_BYTES, SendRequest, error_field
from outpost.records import ApiKey, Domain
from tests.fakes.store import FakeApiKeys, FakeDomains, FakeSecrets

BASE = {"from": "Shop <shop@example.com>", "to": ["a@example.org"], "subject": "s", "text": "t"}


def req(**kw):
    return SendRequest.model_validate({**BASE, **kw})


@pytest.mark.parametrize("address", [
    "Ünïcode Näme <jöhn@bücher.example>", "用户@例子.广告", '"quoted local"@example.org',
    "user+tag@sub.example.co.uk", "a@xn--bcher-kva.example"])
def test_internationalised_and_quoted_addresses_are_accepted(address):
    assert req(to=[address]).to == [address]


@pytest.mark.parametrize("address", [
    "no-at-sign", "a@b", "a@-bad-.example", "a..b@example.org", "a@example.org\r\nBcc: x@y.z",
    "a@example.123", "Name <a@example.org", "x" * 65 + "@example.org"])
def test_bad_addresses_are_refused(address):
    with pytest.raises(ValidationError):
        req(to=[address])


@pytest.mark.parametrize("field,value", [
    ("subject", "a\r\nb"), ("subject", "a\nb"), ("headers", {"X-A": "1\r\n2"}),
    ("headers", {"X A": "1"}), ("headers", {"X:A": "1"}),
    ("attachments", [{"filename": "a\nb.txt", "content": "AA=="}]),
    ("attachments", [{"filename": "a", "content": "AA==", "content_id": "x\ry"}]),
    ("reply_to", ["r@example.org\nX: y"])])
def test_cr_or_lf_anywhere_in_a_header_is_header_injection(field, value):
    with pytest.raises(ValidationError):
        req(**{field: value})


@pytest.mark.parametrize("name", ["From", "to", "CC", "Bcc", "Subject", "Date", "Message-ID",
                                  "DKIM-Signature", "Return-Path", "Received", "Content-Type",
                                  "content-transfer-encoding"])
def test_owned_headers_are_refused(name):
    with pytest.raises(ValidationError, match="set by Outpost"):
        req(headers={name: "x"})


def test_limits_and_required_parts():
    with pytest.raises(ValidationError, match="text or html"):
        req(text=None)
    with pytest.raises(ValidationError, match="at most 50"):
        req(to=[f"u{i}@example.org" for i in range(30)], cc=[f"c{i}@example.org" for i in range(21)])
    assert len(req(to=[f"u{i}@example.org" for i in range(50)]).recipients()) == 50
    with pytest.raises(ValidationError):
        req(expires_in=10)
    with pytest.raises(ValidationError):
        req(attachments=[{"filename": "a", "content": "not base64!"}])
    assert req(html="<p>x</p>", text=None).html


def test_recipients_are_deduplicated_across_fields_case_insensitively():
    r = req(to=["A@Example.org"], cc=["a@example.org", "b@example.org"], bcc=["B@EXAMPLE.ORG"])
    assert r.recipients() == [("A@example.org", "to"), ("b@example.org", "cc")]


def test_encoded_size_counts_attachments_for_the_40_mb_limit():
    small = req()
    assert small.encoded_size() < 10_000
    big = req(attachments=[{"filename": "a.bin", "content": base64.b64encode(b"\0" * 32_000_000).decode()}])
    assert big.encoded_size() > MAX_MESSAGE_BYTES


def test_cursor_round_trip_and_tampering():
    c = Cursor("2026-01-02", {"pk": "MSG#x", "gsi3pk": "DAY#2026-01-02"})
    attrs = ("pk", "gsi3pk")
    token = encode_cursor(c)
    assert token and "{" not in token
    assert decode_cursor(token, parts=["2026-01-02"], key_attrs=attrs) == c
    for bad in ("garbage", "e30", base64.urlsafe_b64encode(b'{"p": 1, "k": null}').decode(),
                base64.urlsafe_b64encode(json.dumps({"p": "x", "k": {"a": 1}}).encode()).decode()):
        with pytest.raises(InvalidRequestError):
            decode_cursor(bad, parts=["x", "2026-01-02"], key_attrs=attrs)
    with pytest.raises(InvalidRequestError):
        decode_cursor(token, parts=["2026-01-01"], key_attrs=attrs)
    with pytest.raises(InvalidRequestError):
        decode_cursor(token, parts=["2026-01-02"], key_attrs=("pk", "gsi3pk", "gsi3sk"))
    with pytest.raises(InvalidRequestError):
        check_key(c, "gsi3pk", "DAY#2026-01-03")


def test_token_bucket_allows_a_burst_then_paces():
    now = [100.0]
    b = TokenBuckets(rate=2.0, burst=3, clock=lambda: now[0])
    assert [b.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = b.take("k")
    assert wait == pytest.approx(0.5)
    assert b.take("other") == 0.0  # per key
    now[0] += 0.5
    assert b.take("k") == 0.0
    assert b.take("k", rate=0.1, burst=1) == pytest.approx(10.0)


def test_domain_records_verify_rotate_and_retire():
    from outpost.signing import keys_from_secret

    dns: dict[tuple[str, str], list[str]] = {}
    now = [1_800_000_000.0]
    secrets = FakeSecrets()
    svc = DomainService(domains=FakeDomains(), secrets=secrets, secret_id=lambda d: f"dkim/{d}",
                        lookup=lambda n, t: dns.get((n, t), []), sender_ip="192.0.2.7",
                        bounce_domain="bounces.example.net", region="eu-west-1", grace_days=7,
                        clock=lambda: now[0])
    d = svc.create("Example.COM")
    assert d["domain"] == "example.com" and not d["verified"]
    recs = {r["purpose"]: r for r in d["records"]}
    assert recs["spf"]["value"] == "v=spf1 ip4:192.0.2.7 ~all" and recs["spf"]["status"] == "missing"
    assert recs["bounce_mx"]["value"] == "10 inbound-smtp.eu-west-1.amazonaws.com"
    dkim = [r for r in d["records"] if r["purpose"] == "dkim"]
    for r in dkim:
        dns[(r["name"], "TXT")] = [r["value"]]
    dns[("example.com", "TXT")] = ["v=spf1 include:_spf.google.com ip4:192.0.2.0/24 -all"]
    dns[("example.com", "TXT")].append("google-site-verification=x")
    dns[("bounces.example.net", "MX")] = ["10 inbound-smtp.eu-west-1.amazonaws.com"]
    assert not svc.check("example.com")["verified"]  # GET reads only
    d = svc.verify("example.com")
    assert d["verified"] and {r["purpose"]: r["status"] for r in d["records"]} == {
        "dkim": "verified", "spf": "verified", "dmarc": "missing", "bounce_mx": "verified"}

    first = {k.selector for k in keys_from_secret(secrets.data["dkim/example.com"])}
    r = svc.rotate("example.com")
    assert len(r["pending_selectors"]) == 2 and not set(r["pending_selectors"]) & first
    assert {k.selector for k in keys_from_secret(secrets.data["dkim/example.com"])} == first
    for rec in r["records"]:
        if rec["purpose"] == "dkim" and rec["status"] == "missing":
            dns[(rec["name"], "TXT")] = [rec["value"]]
    assert {k.selector for k in keys_from_secret(svc.check("example.com") and
                                                 secrets.data["dkim/example.com"])} == first
    r = svc.verify("example.com")
    assert [x["status"] for x in r["records"] if x["purpose"] == "dkim"].count("retiring") == 2
    newest = keys_from_secret(secrets.data["dkim/example.com"])
    assert {k.selector for k in newest[:2]} == set(r["selectors"]) - first
    now[0] += 8 * 86400  # past the grace period: the old keys retire
    r = svc.verify("example.com")
    assert {k.selector for k in keys_from_secret(secrets.data["dkim/example.com"])} == set(r["selectors"])
    assert not set(r["selectors"]) & first


def test_the_scheduled_recheck_counts_what_it_unverified_and_what_fails_dkim():
    dns: dict[tuple[str, str], list[str]] = {}
    svc = DomainService(domains=FakeDomains(), secrets=FakeSecrets(), secret_id=lambda d: f"dkim/{d}",
                        lookup=lambda n, t: dns.get((n, t), []), sender_ip="192.0.2.7",
                        bounce_domain="bounces.example.net", region="eu-west-1", unverify_after_hours=0)
    dkim = [r for r in svc.create("example.com")["records"] if r["purpose"] == "dkim"]
    for r in dkim:
        dns[(r["name"], "TXT")] = [r["value"]]
    assert svc.verify("example.com")["verified"]
    counted: list[tuple[str, int]] = []
    out = svc.recheck_all(count=lambda name, n: counted.append((name, n)))
    assert out["verified"] == ["example.com"]
    assert counted == [("DomainUnverified", 0), ("DomainDkimFailing", 0)]
    dns.clear()  # the DKIM records are gone: failing at once, un-verified at the next check
    svc.recheck_all(count=lambda name, n: counted.append((name, n)))
    out = svc.recheck_all(count=lambda name, n: counted.append((name, n)))
    assert out["unverified"] == ["example.com"]
    assert counted[2:] == [("DomainUnverified", 0), ("DomainDkimFailing", 1),
                           ("DomainUnverified", 1), ("DomainDkimFailing", 0)]


def test_domain_create_claims_the_name_first_and_can_be_finished():
    from outpost.errors import ConflictError

    secrets, table = FakeSecrets(), FakeDomains()
    svc = DomainService(domains=table, secrets=secrets, secret_id=lambda d: f"dkim/{d}",
                        lookup=lambda n, t: [], sender_ip="192.0.2.7", bounce_domain="b.example.net",
                        region="eu-west-1")
    # Another create won the name and has not stored its keys yet (or stopped before it did).
    table.put_domain(Domain(domain="example.com", verified=False, selectors=("other",)))
    assert "dkim/example.com" not in secrets.data
    d = svc.create("example.com")  # finishes: keys stored, the item names their selectors
    stored = {e["selector"] for e in secrets.data["dkim/example.com"]["keys"]}
    assert set(table.domain("example.com").selectors) == stored == {
        r["name"].split("._domainkey.")[0] for r in d["records"] if r["purpose"] == "dkim"}
    with pytest.raises(ConflictError):  # once keys exist, a second create is refused and changes nothing
        svc.create("example.com")
    assert {e["selector"] for e in secrets.data["dkim/example.com"]["keys"]} == stored


def test_error_shape_from_the_routes_with_fakes():
    from outpost.api.routes import build_app
    from outpost.api.service import QueryService, SendService

    keys = FakeApiKeys(ApiKey(key_hash=key_hash("op_good"), key_id="abc", scopes=("read",), name="t"))
    app = build_app(keys=KeyRing(keys), sender=SendService(store=None, suppressions=None, queue=None,
                                                          domains=FakeDomains()),
                    queries=QueryService(store=None, suppressions=None))

    def hit(method, path, body=None, auth="Bearer op_good", b64=False):
        path, _, query = path.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&")) if query else None
        ev = {"httpMethod": method, "path": path, "resource": "/{proxy+}",
              "headers": {"Authorization": auth, "Content-Type": "application/json"},
              "body": body, "isBase64Encoded": b64, "requestContext": {"stage": "prod"},
              "queryStringParameters": params,
              "multiValueQueryStringParameters": {k: [v] for k, v in (params or {}).items()} or None}
        res = app.resolve(ev, None)
        return res["statusCode"], json.loads(res["body"])

    cases = [
        (hit("POST", "/v1/messages", "{not json"), 400, "invalid_json"),
        (hit("POST", "/v1/messages", base64.b64encode(b"\xff\xfe").decode(), b64=True), 400, "invalid_json"),
        (hit("POST", "/v1/messages", json.dumps(BASE), auth=""), 401, "unauthorized"),
        (hit("POST", "/v1/messages", json.dumps(BASE)), 403, "forbidden"),
        (hit("POST", "/v1/messages", json.dumps({**BASE, "subject": "a\nb"})), 422, "validation_error"),
        (hit("GET", "/v1/nope"), 404, "not_found"),
        (hit("GET", "/v1/messages/not-an-id"), 422, "validation_error"),  # the declared pattern
        (hit("PATCH", "/v1/messages"), 405, "method_not_allowed"),
        (hit("GET", "/v1/messages?cursor=zzz"), 400, "validation_error"),
    ]
    for (status, body), want_status, code in cases:
        assert (status, body["error"]["code"]) == (want_status, code), body
        assert set(body["error"]) == {"code", "message", "field"}


# ---- attachments: inline content or an upload ---------------------------------------------------
UPLOAD = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("attachment", [
    {"filename": "a.bin"},  # neither
    {"filename": "a.bin", "content": "AA==", "upload_id": UPLOAD},  # both
])
def test_an_attachment_has_exactly_one_of_content_or_upload_id(attachment):
    with pytest.raises(ValidationError, match="exactly one of content or upload_id") as e:
        req(attachments=[{"filename": "ok.txt", "content": "AA=="}, attachment])
    assert error_field(e.value)[0] == "attachments[1]"


def test_upload_ids_are_checked_and_counted_base64_inflated():
    with pytest.raises(ValidationError) as e:
        req(attachments=[{"filename": "a", "upload_id": "../bodies/x"}])
    assert error_field(e.value)[0] == "attachments[0].upload_id"
    r = req(attachments=[{"filename": "a", "upload_id": UPLOAD}])
    assert r.attachments[0].content is None
    # 30 MB raw is 40 MB in base64: over the limit although the request body is tiny.
    assert r.encoded_size(30 * 1024 * 1024) > MAX_MESSAGE_BYTES
    assert r.encoded_size(3 * 1024 * 1024) - r.encoded_size() >= 4 * 1024 * 1024


def test_attachment_shape_and_upload_errors_from_the_routes():
    from outpost.api.routes import build_app
    from outpost.api.service import QueryService, SendService

    keys = FakeApiKeys(ApiKey(key_hash=key_hash("op_send"), key_id="abc", scopes=("send",), name="t"))
    app = build_app(keys=KeyRing(keys), sender=SendService(store=None, suppressions=None, queue=None,
                                                          domains=FakeDomains()),
                    queries=QueryService(store=None, suppressions=None))

    def post(path, body):
        ev = {"httpMethod": "POST", "path": path, "resource": "/{proxy+}",
              "headers": {"Authorization": "Bearer op_send", "Content-Type": "application/json"},
              "body": json.dumps(body), "isBase64Encoded": False, "requestContext": {"stage": "prod"},
              "queryStringParameters": None, "multiValueQueryStringParameters": None}
        res = app.resolve(ev, None)
        return res["statusCode"], json.loads(res["body"])["error"]

    for attachment in ({"filename": "a"}, {"filename": "a", "content": "AA==", "upload_id": UPLOAD}):
        status, err = post("/v1/messages", {**BASE, "attachments": [attachment]})
        assert (status, err["field"]) == (422, "attachments[0]"), err
        assert "exactly one of content or upload_id" in err["message"]
    status, err = post("/v1/uploads", {"filename": "a.bin", "size": MAX_MESSAGE_BYTES + 1})
    # 422: the request is small; its declared size breaks the documented maximum.
    assert (status, err["code"], err["field"]) == (422, "validation_error", "size"), err
    status, err = post("/v1/uploads", {"filename": "a\r\nb", "size": 10})
    assert (status, err["field"]) == (422, "filename"), err
    status, err = post("/v1/uploads", {"filename": "a", "size": 0})
    assert (status, err["field"]) == (422, "size"), err
