"""The send API over HTTP on the local stack: moto behind, the template's handler in front.

Every request goes through the local API Gateway (HTTP -> REST proxy event -> the handler
file), and every effect is read back from moto (DynamoDB items, S3 objects, SQS bodies).
"""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from api_rig import call, start_stack, stop_stack

ROOT = Path(__file__).resolve().parents[2]
FROM = "Outpost Demo <hello@outpost.test>"


@pytest.fixture(scope="module")
def stack():
    st = start_stack("127.0.8")
    yield st
    stop_stack(st)


def msg(**kw):
    return {"from": FROM, "to": ["alice@accept.test"], "subject": "Hi", "text": "Hello", **kw}


def new_key(scopes, **kw):
    from outpost.api.auth import KeyRing
    from outpost.bootstrap import api_keys_table

    return KeyRing(api_keys_table()).create("test", scopes, **kw)[0]


def test_send_with_everything_the_issue_lists(stack):
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
    status, _, body = call(stack, "POST", "/v1/messages", {
        "from": "Ünïcode Name <hello@outpost.test>", "to": ["Alice <alice@accept.test>"],
        "cc": ["bob@accept.test"], "bcc": "carol@accept.test", "reply_to": ["Help <help@outpost.test>"],
        "subject": "Ïnvoice", "text": "see attached", "html": '<p><img src="cid:logo"></p>',
        "headers": {"X-Campaign": "april"}, "tags": {"kind": "invoice"}, "tls": "required",
        "expires_in": 3600,
        "attachments": [{"filename": "logo.png", "content": png, "content_type": "image/png",
                         "content_id": "logo"}]})
    assert status == 202, body
    assert [r["address"] for r in body["recipients"]] == ["alice@accept.test", "bob@accept.test",
                                                         "carol@accept.test"]
    assert {r["status"] for r in body["recipients"]} == {"queued"}
    status, _, m = call(stack, "GET", f"/v1/messages/{body['id']}")
    assert status == 200 and m["tls"] == "required" and m["tags"] == {"kind": "invoice"}
    assert [r["field"] for r in m["recipients"]] == ["to", "cc", "bcc"]


def test_suppressed_recipients_are_reported_and_not_queued(stack):
    call(stack, "PUT", "/v1/suppressions/gone@accept.test", {"reason": "left the company"})
    status, _, body = call(stack, "POST", "/v1/messages", msg(to=["gone@accept.test", "x@accept.test"]))
    assert status == 202
    assert body["recipients"] == [{"address": "gone@accept.test", "status": "suppressed"},
                                  {"address": "x@accept.test", "status": "queued"}]


def test_auth_scopes_and_verified_domains(stack):
    assert call(stack, "POST", "/v1/messages", msg(), key="")[0] == 401
    assert call(stack, "POST", "/v1/messages", msg(), key="op_nope")[0] == 401
    reader = new_key(["read"])
    status, _, body = call(stack, "POST", "/v1/messages", msg(), key=reader)
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, _, body = call(stack, "POST", "/v1/messages", msg(**{"from": "me@unverified.test"}))
    assert status == 403 and body["error"]["field"] == "from"


def test_revoked_keys_get_401(stack):
    from outpost.api.auth import KeyRing
    from outpost.bootstrap import api_keys_table

    ring = KeyRing(api_keys_table())
    key, item = ring.create("short-lived", ["read"])
    ring.revoke(item["key_id"])
    status, _, body = call(stack, "GET", "/v1/suppressions", key=key)
    assert status == 401 and "revoked" in body["error"]["message"]
    listed = {k["key_id"]: k for k in ring.list()}
    assert listed[item["key_id"]]["revoked_at"] and "key_hash" not in listed[item["key_id"]]


def test_per_key_throttling_answers_429_with_retry_after(stack):
    # One token per 20 s: the third call is refused however slowly a loaded machine makes the
    # three (at 0.5 a second, three calls over 2 s found a new token and got 200).
    key = new_key(["read"], rate=0.05, burst=2)
    codes = [call(stack, "GET", "/v1/suppressions", key=key)[:2] for _ in range(3)]
    assert [c for c, _ in codes] == [200, 200, 429]
    assert int(codes[2][1]["Retry-After"]) >= 1
    # Another key is not affected by this one's bucket.
    assert call(stack, "GET", "/v1/suppressions")[0] == 200


def test_validation_errors_name_the_field(stack):
    cases = [
        (msg(subject="a\r\nBcc: victim@x.test"), "subject"),
        (msg(to=["a@accept.test\r\nX: y"]), "to[0]"),
        (msg(headers={"Content-Type": "text/plain"}), "headers"),
        (msg(headers={"X-A": "b\nc"}), "headers"),
        (msg(text=None), None),
        (msg(to=[f"u{i}@accept.test" for i in range(51)]), None),
        (msg(tls="sometimes"), "tls"),
    ]
    for body, field in cases:
        status, _, out = call(stack, "POST", "/v1/messages", body)
        assert status == 422, (body, out)
        assert set(out) == {"error"} and set(out["error"]) == {"code", "message", "field"}
        if field:
            assert out["error"]["field"] == field, out
    status, _, out = call(stack, "POST", "/v1/messages", raw=b'{"from": ')
    assert status == 400 and out["error"]["code"] == "invalid_json"
    status, _, out = call(stack, "GET", "/v1/nothing-here")
    assert status == 404 and out["error"]["code"] == "not_found"


def test_idempotency_key_replays_and_conflicts(stack):
    body = msg(to=["idem@accept.test"], subject="once")
    h = {"Idempotency-Key": f"order-{time.time()}"}
    s1, h1, b1 = call(stack, "POST", "/v1/messages", body, headers=h)
    s2, h2, b2 = call(stack, "POST", "/v1/messages", body, headers=h)
    assert s1 == s2 == 202 and b1 == b2 and h2.get("Idempotent-Replayed") == "true"
    s3, _, b3 = call(stack, "POST", "/v1/messages", dict(body, subject="twice"), headers=h)
    assert s3 == 409 and b3["error"]["field"] == "Idempotency-Key"
    _, _, listed = call(stack, "GET", "/v1/messages?recipient=idem@accept.test")
    assert [i["id"] for i in listed["items"]] == [b1["id"]]  # sent once
    # Another API key may use the same Idempotency-Key for its own request.
    other = new_key(["send", "read"])
    s4, _, b4 = call(stack, "POST", "/v1/messages", body, headers=h, key=other)
    assert s4 == 202 and b4["id"] != b1["id"]


def test_one_idempotency_key_from_two_api_keys_at_once_never_collides(stack):
    """Two callers pick the same Idempotency-Key at the same moment: each gets its own message,
    and each one's replay answers its own (records in DynamoDB, keyed by the caller's key)."""
    body = msg(to=["shared-key@accept.test"], subject="same key, two callers")
    h = {"Idempotency-Key": f"shared-{time.time()}"}
    callers = [new_key(["send", "read"]) for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        first = list(pool.map(lambda k: call(stack, "POST", "/v1/messages", body, headers=h, key=k), callers))
    assert [s for s, _, _ in first] == [202, 202], first
    assert first[0][2]["id"] != first[1][2]["id"]
    assert not any(hd.get("Idempotent-Replayed") for _, hd, _ in first)
    for key, (_, _, out) in zip(callers, first, strict=True):
        status, headers, again = call(stack, "POST", "/v1/messages", body, headers=h, key=key)
        assert (status, again["id"], headers.get("Idempotent-Replayed")) == (202, out["id"], "true")
    _, _, listed = call(stack, "GET", "/v1/messages?recipient=shared-key@accept.test")
    assert sorted(i["id"] for i in listed["items"]) == sorted(out["id"] for _, _, out in first)


def test_batch_answers_each_message_on_its_own(stack):
    status, _, out = call(stack, "POST", "/v1/messages/batch", {"messages": [
        msg(to=["b1@accept.test"]), msg(to=["nope"]), msg(**{"from": "x@unverified.test"}),
        msg(to=["b2@accept.test"])]})
    assert status == 200, out
    assert [r["status"] for r in out["results"]] == [202, 422, 403, 202]
    assert out["accepted"] == 2 and out["rejected"] == 2
    assert out["results"][1]["error"]["field"] == "messages[1].to[0]"
    status, _, out = call(stack, "POST", "/v1/messages/batch", {"messages": [msg()] * 501})
    assert status == 422 and out["error"]["field"] == "messages"


def test_a_batch_whose_items_are_all_found_through_their_claims_is_a_replay(stack):
    """s17f: the batch's idempotency record is gone (a run killed past its commits, its
    in-progress mark expired), so the retry runs again and finds each message through its item's
    Idempotency-Key claim: the first answer, now with Idempotent-Replayed: true (before: none)."""
    from outpost.bootstrap import aws
    from outpost.config import settings

    body = {"messages": [msg(to=["rb1@accept.test"]), msg(to=["nope"]), msg(to=["rb2@accept.test"])]}
    h = {"Idempotency-Key": f"batch-{time.time()}"}
    s1, h1, b1 = call(stack, "POST", "/v1/messages/batch", body, headers=h)
    assert s1 == 200 and [r["status"] for r in b1["results"]] == [202, 422, 202] and "Idempotent-Replayed" not in h1
    ddb, table = aws("dynamodb"), settings().idempotency_table
    records = [i for i in ddb.scan(TableName=table, ConsistentRead=True)["Items"]
               if b1["results"][0]["id"] in str(i.get("data", {}))]
    assert len(records) == 1
    ddb.delete_item(TableName=table, Key={"id": records[0]["id"]})
    s2, h2, b2 = call(stack, "POST", "/v1/messages/batch", body, headers=h)
    assert (s2, b2, h2.get("Idempotent-Replayed")) == (200, b1, "true")
    for to in ("rb1@accept.test", "rb2@accept.test"):  # no second copy
        _, _, listed = call(stack, "GET", f"/v1/messages?recipient={to}")
        assert len(listed["items"]) == 1


def test_large_bodies_go_to_s3_and_the_queue_carries_a_pointer(stack):
    import boto3

    blob = base64.b64encode(b"\0" * 400_000).decode()
    status, _, out = call(stack, "POST", "/v1/messages", msg(
        to=["big@accept.test"], attachments=[{"filename": "a.bin", "content": blob}]))
    assert status == 202
    ddb = boto3.client("dynamodb")
    meta = ddb.get_item(TableName=stack.env["OUTPOST_MESSAGES_TABLE"],
                        Key={"pk": {"S": f"MSG#{out['id']}"}, "sk": {"S": "META"}})["Item"]
    assert "spec" not in meta and meta["spec_key"]["S"] == f"bodies/{out['id']}.json"
    obj = boto3.client("s3").get_object(Bucket=stack.env["OUTPOST_BUCKET"], Key=meta["spec_key"]["S"])
    assert json.loads(obj["Body"].read())["attachments"][0]["content"] == blob


def test_listing_messages_paginates_with_an_opaque_cursor(stack):
    ids = [call(stack, "POST", "/v1/messages", msg(to=["pager@accept.test"], subject=f"n{i}"))[2]["id"]
           for i in range(5)]
    seen, cursor = [], None
    for _ in range(10):
        q = "/v1/messages?recipient=pager@accept.test&limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, _, page = call(stack, "GET", q)
        assert status == 200 and len(page["items"]) <= 2
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))  # newest first, each once
    status, _, page = call(stack, "GET", "/v1/messages?limit=3")
    assert status == 200 and len(page["items"]) == 3 and page["next_cursor"]
    status, _, page = call(stack, "GET", "/v1/messages?recipient=pager@accept.test&status=bounced")
    assert status == 200 and page["items"] == []
    status, _, out = call(stack, "GET", "/v1/messages?cursor=bm90LWEtY3Vyc29y")
    assert status == 400 and out["error"]["field"] == "cursor"
    # A cursor from one recipient's walk cannot be replayed against another's partition.
    _, _, first = call(stack, "GET", "/v1/messages?recipient=pager@accept.test&limit=1")
    status, _, out = call(stack, "GET", f"/v1/messages?recipient=alice@accept.test&cursor={first['next_cursor']}")
    assert status == 400


def test_bounces_list_by_recipient_kind_and_time(stack):
    from outpost.bootstrap import message_store
    from outpost.records import Bounce

    _, _, sent = call(stack, "POST", "/v1/messages", msg(to=["bouncy@accept.test"]))
    now = time.time()
    store = message_store()
    for n, (typ, kind) in enumerate((("bounce", "hard"), ("bounce", "soft"), ("complaint", None))):
        store.add_bounce(Bounce(message_id=sent["id"], index=0, bounce_id=f"b{n}",
                                address="bouncy@accept.test", type=typ, kind=kind, status="5.1.1",
                                received_at=store_iso(now + n)), now + n)
    _, _, page = call(stack, "GET", "/v1/bounces?recipient=bouncy@accept.test")
    assert [b["type"] for b in page["items"]] == ["complaint", "bounce", "bounce"]
    _, _, page = call(stack, "GET", "/v1/bounces?recipient=bouncy@accept.test&kind=hard")
    assert [(b["kind"], b["message_id"]) for b in page["items"]] == [("hard", sent["id"])]
    _, _, page = call(stack, "GET", "/v1/bounces?kind=complaint")
    assert any(b["address"] == "bouncy@accept.test" for b in page["items"])
    since = store_iso(now + 10)
    _, _, page = call(stack, "GET", f"/v1/bounces?recipient=bouncy@accept.test&since={since}")
    assert page["items"] == []


def store_iso(ts):
    from outpost.clock import iso

    return iso(ts)


def test_suppressions_put_list_delete_with_who_and_when(stack):
    status, _, item = call(stack, "PUT", "/v1/suppressions/Someone@Accept.Test", {"reason": "asked us"})
    assert status == 201 and item["address"] == "someone@accept.test" and item["source"] == "manual"
    assert call(stack, "PUT", "/v1/suppressions/someone@accept.test")[0] == 200  # already there
    _, _, page = call(stack, "GET", "/v1/suppressions?source=manual")
    assert "someone@accept.test" in [i["address"] for i in page["items"]]
    reader = new_key(["read", "send"])
    assert call(stack, "DELETE", "/v1/suppressions/someone@accept.test", key=reader)[0] == 403
    status, _, gone = call(stack, "DELETE", "/v1/suppressions/someone@accept.test")
    assert status == 200 and gone["removed_by"].startswith("local admin")
    assert call(stack, "GET", "/v1/suppressions/someone@accept.test")[0] == 404
    assert call(stack, "DELETE", "/v1/suppressions/someone@accept.test")[0] == 404
    from outpost.bootstrap import message_store

    events = message_store().suppression_history("someone@accept.test")
    assert [e.action for e in events] == ["removed", "added"]
    assert events[0].by.startswith("local admin") and events[0].at == gone["removed_at"]
    status, _, _ = call(stack, "PUT", "/v1/suppressions/someone@accept.test")
    _, _, again = call(stack, "GET", "/v1/suppressions/someone@accept.test")
    assert [h["action"] for h in again["history"]] == ["added", "removed", "added"]


def test_domain_lifecycle_publish_verify_send_rotate(stack):
    status, _, d = call(stack, "POST", "/v1/domains", {"domain": "Shop.Example.test", "mta_sts": True})
    assert status == 201, d
    assert d["domain"] == "shop.example.test" and d["verified"] is False
    by = {(r["purpose"], r["name"]): r for r in d["records"]}
    dkim = [r for r in d["records"] if r["purpose"] == "dkim"]
    assert len(dkim) == 2 and {r["status"] for r in dkim} == {"missing"}
    assert any("k=rsa" in r["value"] for r in dkim) and any("k=ed25519" in r["value"] for r in dkim)
    assert by[("spf", "shop.example.test")]["value"] == f"v=spf1 ip4:{stack.config.ip(1)} ~all"
    assert by[("bounce_mx", "bounces.outpost.test")]["value"] == "10 inbound-smtp.us-east-1.amazonaws.com"
    assert "mode: testing" in d["mta_sts_policy"]
    assert call(stack, "POST", "/v1/domains", {"domain": "shop.example.test"})[0] == 409
    sender = {"from": "shop@shop.example.test"}
    assert call(stack, "POST", "/v1/messages", msg(**sender))[0] == 403

    stack.dns.add(dkim[0]["name"], "TXT", "v=DKIM1; k=rsa; p=AAAAwrong")
    _, _, d = call(stack, "GET", "/v1/domains/shop.example.test")
    wrong = next(r for r in d["records"] if r["name"] == dkim[0]["name"])
    assert wrong["status"] == "wrong" and wrong["found"] == ["v=DKIM1; k=rsa; p=AAAAwrong"]
    fresh_dns(stack, dkim)
    stack.dns.add("shop.example.test", "TXT", f"v=spf1 ip4:{stack.config.ip(1)} ~all")
    _, _, d = call(stack, "GET", "/v1/domains/shop.example.test")
    assert d["verified"] is False  # GET reads; the admin verify (or the schedule) writes
    assert call(stack, "POST", "/v1/domains/shop.example.test/verify", key=new_key(["read", "send"]))[0] == 403
    _, _, d = call(stack, "POST", "/v1/domains/shop.example.test/verify")
    st = {r["purpose"] + ":" + r["name"]: r["status"] for r in d["records"]}
    assert d["verified"] is True, st
    assert st["spf:shop.example.test"] == "verified" and st["dmarc:_dmarc.shop.example.test"] == "missing"
    assert call(stack, "POST", "/v1/messages", msg(**sender))[0] == 202

    # Rotation: new selectors wait (the old keys keep signing) until their records verify.
    status, _, r = call(stack, "POST", "/v1/domains/shop.example.test/rotate")
    assert status == 200 and len(r["pending_selectors"]) == 2
    new = [x for x in r["records"] if x["purpose"] == "dkim" and x["status"] == "missing"]
    assert {x["name"].split(".")[0] for x in new} == set(r["pending_selectors"])
    assert signing_selectors("shop.example.test") == set(d["selectors"])
    for rec in new:
        stack.dns.add(rec["name"], "TXT", rec["value"])
    _, _, r = call(stack, "GET", "/v1/domains/shop.example.test")
    assert len(r["pending_selectors"]) == 2  # published, but GET promotes nothing
    _, _, r = call(stack, "POST", "/v1/domains/shop.example.test/verify")
    assert r["pending_selectors"] == [] and set(r["selectors"]) >= set(x["name"].split(".")[0] for x in new)
    old = [x for x in r["records"] if x["purpose"] == "dkim" and x["status"] == "retiring"]
    assert len(old) == 2  # still published and loadable during the grace period
    assert signing_selectors("shop.example.test") == {x["name"].split(".")[0] for x in new}


def fresh_dns(stack, records):
    for rec in records:
        stack.dns.remove(rec["name"], "TXT")
        stack.dns.add(rec["name"], "TXT", rec["value"])


def signing_selectors(domain):
    """The selectors the sender would sign with now (first key of each algorithm)."""
    from outpost.bootstrap import dkim_secret_id, secrets
    from outpost.signing import keys_from_secret

    keys = keys_from_secret(secrets().read_json(dkim_secret_id(domain)))
    first = {}
    for k in keys:
        first.setdefault(k.algorithm, k.selector)
    return set(first.values())


def test_handler_with_the_events_in_events_dir(stack):
    """The handler itself, fed the API Gateway events kept in events/ (as `sam local invoke`)."""
    fn = stack.functions["SendApiFunction"]
    from outpost.bootstrap import domains_table
    from outpost.records import Domain

    domains_table().put_domain(Domain(domain="shop.example.com", verified=True))
    for name, expect in (("api_post_message.json", 202), ("api_post_batch.json", 200),
                         ("api_list_messages.json", 200), ("api_get_message.json", 404)):
        event = json.loads((ROOT / "events" / name).read_text())
        event["headers"]["Authorization"] = f"Bearer {stack.api_key}"
        if event.get("multiValueHeaders"):
            event["multiValueHeaders"]["Authorization"] = [f"Bearer {stack.api_key}"]
        res = fn.invoke(event)
        assert res["statusCode"] == expect, (name, res)
        body = json.loads(res["body"])
        if name == "api_post_batch.json":
            assert [r["status"] for r in body["results"]] == [202, 422]
        if name == "api_list_messages.json":
            assert {i["recipient"] for i in body["items"]} == {"alice@example.org"}
