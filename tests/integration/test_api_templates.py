"""Stored templates (issue 14) on the local stack: the HTTP API, DynamoDB Local's TemplatesTable,
the queue, the sender and a real MX on loopback (STARTTLS verified against the test CA). A
send with a template stores the rendered bodies; editing the template afterwards does not
change the mail already queued (checked in the delivered bytes)."""

from __future__ import annotations

import http.server
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from typing import Any

import pytest

from outpost_local.stack import SENDING_DOMAIN
from tests.conftest import Api

pytestmark = pytest.mark.timeout(300)
FINAL = {"delivered", "bounced", "expired", "suppressed", "complained"}
FROM = f"Shop <shop@{SENDING_DOMAIN}>"


def _call(api: Api, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
    """api.call, waiting out the session key's token bucket (other test files share the key)."""
    for _ in range(30):
        status, out = api.call(method, path, body, **kw)
        if status != 429:
            return status, out
        time.sleep(1)
    return status, out


@pytest.fixture
def template(api: Api) -> Iterator[Callable[..., dict]]:
    """Create templates through the API (a unique alias each); all deleted when the test ends."""
    made: list[str] = []

    def create(prefix: str = "t", **fields: Any) -> dict:
        alias = f"{prefix}-{secrets.token_hex(4)}"
        status, body = _call(api, "POST", "/v1/templates", {"alias": alias, "name": alias, **fields})
        assert status == 201, body
        made.append(alias)
        return body

    yield create
    for alias in reversed(made):  # the templates before the layouts they use (a layout in use: 409)
        _call(api, "DELETE", f"/v1/templates/{alias}")


def _delivered(api: Api, local_stack: Any, message_id: str, rcpt: str) -> Message:
    body = api.wait_for(message_id, lambda b: all(r["state"] in FINAL for r in b["recipients"]), timeout=90)
    assert body["recipients"][0]["state"] == "delivered", body
    server = local_stack.mx["accept.test"].server
    got = [r for r in server.received if rcpt in r.rcpt_tos]
    assert got and got[-1].tls, "the MX got nothing, or not over TLS"
    return got[-1].message


def _part(msg: Message, subtype: str) -> str:
    part = msg.get_body(preferencelist=(subtype,))
    assert part is not None, f"no text/{subtype} part"
    return str(part.get_content())


def test_create_get_versions_list_and_conflict(api: Api, template: Callable[..., dict]) -> None:
    t = template(subject="Hi {{name}}", html="<p>v1 {{name}}</p>")
    alias = t["alias"]
    assert (t["version"], t["kind"], t["text"]) == (1, "standard", None)
    status, err = _call(api, "POST", "/v1/templates", {"alias": alias, "name": "x", "subject": "s", "html": "h"})
    assert status == 409 and err["error"]["field"] == "alias", err
    status, v2 = _call(api, "PUT", f"/v1/templates/{alias}", {"html": "<p>v2 {{name}}</p>"})
    assert status == 200 and v2["version"] == 2 and v2["subject"] == "Hi {{name}}", v2  # the rest kept
    status, latest = _call(api, "GET", f"/v1/templates/{alias}")
    assert status == 200 and (latest["version"], latest["latest"], latest["html"]) == (2, 2, "<p>v2 {{name}}</p>")
    status, first = _call(api, "GET", f"/v1/templates/{alias}?version=1")
    assert status == 200 and (first["version"], first["latest"], first["html"]) == (1, 2, "<p>v1 {{name}}</p>")
    status, err = _call(api, "GET", f"/v1/templates/{alias}?version=9")
    assert status == 404, err
    status, err = _call(api, "PUT", "/v1/templates/no-such-template", {"html": "x"})
    assert status == 404, err


def test_list_is_paged_with_a_cursor(api: Api, template: Callable[..., dict]) -> None:
    run = secrets.token_hex(3)
    mine = {template(prefix=f"page-{run}-{i}", subject="s", html="h")["alias"] for i in range(3)}
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        status, page = _call(api, "GET", "/v1/templates?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200 and len(page["items"]) <= 2, page
        seen += [i["alias"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert mine <= set(seen) and len(seen) == len(set(seen)) and seen == sorted(seen)
    status, err = _call(api, "GET", "/v1/templates?cursor=QUJD")  # "ABC": no alias
    assert status == 400 and err["error"]["field"] == "cursor", err


def test_validation_names_the_field(api: Api, template: Callable[..., dict]) -> None:
    cases = [
        ({"alias": "Bad Alias", "name": "n", "subject": "s", "html": "h"}, "alias"),
        ({"alias": "ok-alias-x", "name": "n", "html": "h"}, "subject"),
        ({"alias": "ok-alias-x", "name": "n", "subject": "s", "html": "{{#open}}never closed"}, "html"),
        ({"alias": "ok-alias-x", "name": "n", "subject": "s", "html": "{{> partial}}"}, "html"),
        ({"alias": "ok-alias-x", "name": "n", "subject": "a\r\nBcc: x@y.test", "html": "h"}, "subject"),
        ({"alias": "ok-alias-x", "name": "n", "kind": "layout", "html": "<div>no placeholder</div>"}, "html"),
        ({"alias": "ok-alias-x", "name": "n", "subject": "s", "html": "h", "layout": "no-such-layout"}, "layout"),
        ({"alias": "ok-alias-x", "name": "n", "subject": "s", "html": "x" * 256_001}, "html"),
    ]
    for body, field in cases:
        status, err = _call(api, "POST", "/v1/templates", body)
        assert status == 422 and err["error"]["field"] == field, (body["alias"], err)


def test_render_preview_escapes_html_only_and_inlines_css(api: Api, template: Callable[..., dict]) -> None:
    t = template(subject="Order {{number}} for {{name}}",
                 html="<style>p { color: #c00 }</style><p>Dear {{name}}, {{{raw}}} {{& raw}}</p>"
                      "{{#items}}<li>{{title}} x{{qty}}</li>{{/items}}{{^coupon}}<i>no coupon</i>{{/coupon}}"
                      '<a href="https://shop.test/o/{{number}}">your order</a>')
    status, out = _call(api, "POST", f"/v1/templates/{t['alias']}/render", {"variables": {
        "number": 42, "name": "Ann & <Bob>", "raw": "<b>bold</b>", "unused": "ignored",
        "items": [{"title": "Tea", "qty": 2}, {"title": "Cups", "qty": 6}]}})
    assert status == 200, out
    assert out["subject"] == "Order 42 for Ann & <Bob>"  # not HTML: nothing escaped
    assert "Dear Ann &amp; &lt;Bob&gt;, <b>bold</b> <b>bold</b>" in out["html"]
    assert '<p style="color: #c00;">' in out["html"] and "<style" not in out["html"]
    assert "<li>Tea x2</li><li>Cups x6</li><i>no coupon</i>" in out["html"]
    assert "Dear Ann & <Bob>, bold bold" in out["text"]  # derived from the HTML, entities decoded
    assert "your order (https://shop.test/o/42)" in out["text"] and "- Tea x2" in out["text"]
    assert (out["template"], out["version"]) == (t["alias"], 1)


def test_render_refuses_missing_and_injected_variables(api: Api, template: Callable[..., dict]) -> None:
    t = template(subject="Hello {{first_name}}", html="<p>{{first_name}} {{last_name}}</p>"
                 "{{#rows}}{{cell}}{{/rows}}", text="{{first_name}}")
    path = f"/v1/templates/{t['alias']}/render"
    status, err = _call(api, "POST", path, {"variables": {"last_name": "X"}})
    assert status == 422 and err["error"]["field"] == "variables.first_name", err
    status, err = _call(api, "POST", path, {"variables": {"first_name": "A", "last_name": "B", "rows": [{"x": 1}]}})
    assert status == 422 and err["error"]["field"] == "variables.cell", err  # missing inside a section
    status, err = _call(api, "POST", path, {"variables": {"first_name": "A\r\nBcc: evil@x.test", "last_name": "B"}})
    assert status == 422 and err["error"]["field"] == "variables.first_name", err
    status, err = _call(api, "POST", path, {"variables": {"first_name": "A", "last_name": "B"}, "version": 7})
    assert status == 404, err
    nested: dict[str, Any] = {"v": 1}
    for _ in range(12):
        nested = {"n": nested}
    status, err = _call(api, "POST", path, {"variables": nested})
    assert status == 422 and err["error"]["field"] == "variables", err


def test_layout_wraps_html_and_text(api: Api, template: Callable[..., dict]) -> None:
    layout = template(prefix="layout", kind="layout", html="<div class=frame>{{company}}: {{{@content}}}</div>",
                      text="{{company}}\n{{{@content}}}\n-- the team")
    t = template(subject="s", html="<p>Hi {{name}}</p>", text="Hi {{name}}", layout=layout["alias"])
    status, out = _call(api, "POST", f"/v1/templates/{t['alias']}/render",
                           {"variables": {"company": "ACME", "name": "<Zoe>"}})
    assert status == 200, out
    assert out["html"] == "<div class=frame>ACME: <p>Hi &lt;Zoe&gt;</p></div>"
    assert out["text"] == "ACME\nHi <Zoe>\n-- the team"
    status, err = _call(api, "POST", f"/v1/templates/{layout['alias']}/render", {"variables": {}})
    assert status == 422 and err["error"]["field"] == "alias", err  # a layout is rendered through a template


def test_a_layout_in_use_is_not_deleted(api: Api, template: Callable[..., dict]) -> None:
    """DELETE of a layout that a template's latest version uses: 409 naming them and how many;
    once none does (moved to another layout, or deleted), the DELETE goes through."""
    frame = template(prefix="layout", kind="layout", html="<div>{{{@content}}}</div>")["alias"]
    other = template(prefix="layout", kind="layout", html="<main>{{{@content}}}</main>")["alias"]
    users = [template(subject="s", html=f"<p>{i}</p>", layout=frame)["alias"] for i in range(3)]
    status, err = _call(api, "DELETE", f"/v1/templates/{frame}")
    assert status == 409 and err["error"]["code"] == "conflict" and err["error"]["field"] == "alias", err
    assert "used by 3 template(s)" in err["error"]["message"]
    assert all(repr(u) in err["error"]["message"] for u in users), err
    status, out = _call(api, "POST", f"/v1/templates/{users[0]}/render", {"variables": {}})
    assert status == 200 and out["html"] == "<div><p>0</p></div>", out  # the layout is still there
    status, _ = _call(api, "PUT", f"/v1/templates/{users[0]}", {"layout": other})
    assert status == 200
    status, _ = _call(api, "PUT", f"/v1/templates/{users[1]}", {"layout": None})
    assert status == 200
    status, err = _call(api, "DELETE", f"/v1/templates/{frame}")
    assert status == 409 and f"used by 1 template(s) ({users[2]!r})" in err["error"]["message"], err
    assert _call(api, "DELETE", f"/v1/templates/{users[2]}")[0] == 200
    status, out = _call(api, "DELETE", f"/v1/templates/{frame}")
    assert status == 200 and out == {"alias": frame, "deleted": True}, out
    status, err = _call(api, "DELETE", f"/v1/templates/{other}")
    assert status == 409 and f"({users[0]!r})" in err["error"]["message"], err


def _template_store(local_stack: Any) -> Any:
    import boto3

    from outpost.store import TemplateStore

    keys = {"aws_access_key_id": local_stack.env["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": local_stack.env["AWS_SECRET_ACCESS_KEY"]}
    ddb = boto3.client("dynamodb", endpoint_url=local_stack.dynamodb_endpoint,
                       region_name=local_stack.env.get("AWS_DEFAULT_REGION", "us-east-1"), **keys)
    return TemplateStore(ddb, local_stack.stack.physical["TemplatesTable"])


def _race(local_stack: Any, frame: str, tag: str) -> tuple[bool, list[str]]:
    """12 threads create templates using `frame` while one deletes it, released together."""
    from outpost.errors import InvalidRequestError, LayoutInUseError
    from outpost.records import TemplateVersion

    gate = threading.Barrier(13)
    made: list[str] = []

    def create(i: int) -> None:
        store = _template_store(local_stack)
        alias = f"race-{tag}-{i}-{secrets.token_hex(3)}"
        gate.wait()
        try:
            if store.create_template(TemplateVersion(alias, 1, "n", subject="s", html="x", layout=frame)):
                made.append(alias)
        except InvalidRequestError:
            pass  # the layout was gone

    def delete() -> bool:
        store = _template_store(local_stack)
        gate.wait()
        try:
            return bool(store.delete_template(frame))
        except LayoutInUseError:
            return False

    with ThreadPoolExecutor(max_workers=13) as pool:
        writers = [pool.submit(create, i) for i in range(12)]
        deleted = pool.submit(delete).result()
        for w in writers:
            w.result()
    return deleted, made


def test_a_layout_delete_racing_new_users_never_leaves_a_template_without_its_layout(
        local_stack: Any, template: Callable[..., dict]) -> None:
    """On DynamoDB Local, without the API's check in between: 12 threads create templates
    using a layout while another deletes it. Either the delete is refused, or every template
    that names the layout failed to be created (the count item serialises the two)."""
    store = _template_store(local_stack)
    for round_ in range(3):
        frame = template(prefix="layout", kind="layout", html="{{{@content}}}")["alias"]
        deleted, made = _race(local_stack, frame, str(round_))
        assert all((h := store.head(a)) is not None and h.layout == frame for a in made)
        if deleted:
            assert made == [], made  # a template was created on a layout that was deleted
        else:
            assert store.layout_users(frame, limit=20).count == len(made) > 0
        for alias in made:
            store.delete_template(alias)
        assert store.layout_users(frame).count == 0


def test_the_store_refuses_to_make_a_layout_in_use_a_standard_template(
        local_stack: Any, template: Callable[..., dict]) -> None:
    """The service checks first (409); the store's own condition holds without it (a template
    that starts using the layout between the check and the write)."""
    from outpost.errors import LayoutInUseError
    from outpost.records import TemplateVersion

    store = _template_store(local_stack)
    frame = template(prefix="layout", kind="layout", html="{{{@content}}}")["alias"]
    user = template(subject="s", html="x", layout=frame)["alias"]
    with pytest.raises(LayoutInUseError):
        store.add_version(frame, lambda n: TemplateVersion(frame, n, "n", subject="s", html="plain"))
    head = store.head(frame)
    assert head is not None and (head.kind, head.latest) == ("layout", 1)
    store.delete_template(user)
    v = store.add_version(frame, lambda n: TemplateVersion(frame, n, "n", subject="s", html="plain"))
    assert v is not None and v.version == 2 and store.head(frame).kind == "standard"  # type: ignore[union-attr]


def test_layout_users_of_a_layout_made_before_the_count_reads_the_heads_partition(
        local_stack: Any, template: Callable[..., dict]) -> None:
    """A layout created before its uses were counted (no count item): the users are found by a
    Query of the heads' partition (here: a head written directly, as the old code wrote it)."""
    from outpost.store import codec

    store = _template_store(local_stack)
    frame = template(prefix="layout", kind="layout", html="{{{@content}}}")["alias"]
    store.ddb.delete_item(TableName=store.table, Key=store._count_key(frame))  # as before the count
    old = f"old-user-{secrets.token_hex(3)}"
    store.ddb.put_item(TableName=store.table, Item=codec().item(
        {"pk": "TEMPLATES", "sk": old, "alias": old, "latest": 1, "name": "n", "kind": "standard", "layout": frame}))
    try:
        users = store.layout_users(frame)
        assert (users.count, users.aliases) == (1, (old,))
    finally:
        store.ddb.delete_item(TableName=store.table, Key=store._head_key(old))
    assert store.layout_users(frame).count == 0


def test_css_inlining_never_fetches_a_remote_stylesheet(api: Api, template: Callable[..., dict]) -> None:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/css")
            self.end_headers()
            self.wfile.write(b"p { color: blue }")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.2.61", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.2.61:{server.server_address[1]}/evil.css"
        t = template(subject="s", html=f'<link rel="stylesheet" href="{url}"><style>p{{margin:0}}</style><p>x</p>')
        status, out = _call(api, "POST", f"/v1/templates/{t['alias']}/render", {"variables": {}})
        assert status == 200, out
        assert '<p style="margin: 0;">x</p>' in out["html"] and "color: blue" not in out["html"]
    finally:
        server.shutdown()
        server.server_close()
    assert hits == []


def test_parallel_puts_through_the_api_get_distinct_versions(api: Api, template: Callable[..., dict]) -> None:
    t = template(subject="s", html="v1")
    alias = t["alias"]

    def put(i: int) -> int:
        status, body = _call(api, "PUT", f"/v1/templates/{alias}", {"html": f"writer {i}"})
        assert status == 200, body
        return int(body["version"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        versions = list(pool.map(put, range(8)))
    assert sorted(versions) == list(range(2, 10))  # distinct, none lost
    writers = set()
    for n in range(2, 10):
        status, v = _call(api, "GET", f"/v1/templates/{alias}?version={n}")
        assert status == 200, v
        writers.add(v["html"])
    assert writers == {f"writer {i}" for i in range(8)}


def test_concurrent_writers_on_dynamodb_local_never_share_a_version(local_stack: Any, api: Api,
                                                                     template: Callable[..., dict]) -> None:
    """The race itself, without the HTTP server in between: 16 threads, each with its own
    DynamoDB client, released together by a barrier, each adding 3 versions to one alias."""
    import boto3

    from outpost.records import TemplateVersion
    from outpost.store import TemplateStore

    alias = template(subject="s", html="v1")["alias"]
    table = local_stack.stack.physical["TemplatesTable"]
    endpoint = local_stack.dynamodb_endpoint
    gate = threading.Barrier(16)
    region = local_stack.env.get("AWS_DEFAULT_REGION", "us-east-1")
    keys = {"aws_access_key_id": local_stack.env["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": local_stack.env["AWS_SECRET_ACCESS_KEY"]}

    def writer(w: int) -> list[int]:
        store = TemplateStore(boto3.client("dynamodb", endpoint_url=endpoint, region_name=region, **keys), table)
        gate.wait()
        got = []
        for k in range(3):
            v = store.add_version(alias, lambda n, k=k: TemplateVersion(alias, n, "n", html=f"w{w}k{k}", subject="s",
                                                                     created_at="2026-11-30T09:00:00.000Z"))
            assert v is not None
            got.append(v.version)
        return got

    with ThreadPoolExecutor(max_workers=16) as pool:
        versions = [n for got in pool.map(writer, range(16)) for n in got]
    assert sorted(versions) == list(range(2, 50))  # 48 writes: 48 distinct versions, none lost
    status, latest = _call(api, "GET", f"/v1/templates/{alias}")
    assert status == 200 and latest["version"] == 49
    reader = TemplateStore(boto3.client("dynamodb", endpoint_url=endpoint, region_name=region, **keys), table)
    bodies = {v.html for n in range(2, 50) if (v := reader.version(alias, n)) is not None}
    assert bodies == {f"w{w}k{k}" for w in range(16) for k in range(3)}  # every write kept, once


def test_send_stores_the_rendering_so_a_later_edit_changes_nothing(
        api: Api, local_stack: Any, template: Callable[..., dict]) -> None:
    t = template(subject="Grüße, {{name}} ✓", html="<p>Version one for {{name}}</p>")
    rcpt = f"tpl-{secrets.token_hex(3)}@accept.test"
    status, res = _call(api, "POST", "/v1/messages", {"from": FROM, "to": rcpt, "template": t["alias"],
                                                     "variables": {"name": "Zoë"}})
    assert status == 202, res
    status, v2 = _call(api, "PUT", f"/v1/templates/{t['alias']}", {"subject": "Changed", "html": "<p>Version two</p>"})
    assert status == 200 and v2["version"] == 2
    msg = _delivered(api, local_stack, res["id"], rcpt)
    assert msg["Subject"] == "Grüße, Zoë ✓"  # decoded from the RFC 2047 encoded header
    raw = [r for r in local_stack.mx["accept.test"].server.received if rcpt in r.rcpt_tos][-1].data
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and b"subject: =?utf-8?" in head.lower()  # encoded words, not 8-bit bytes
    assert "Version one for Zoë" in _part(msg, "html") and "Version one for Zoë" in _part(msg, "plain")
    status, view = _call(api, "GET", f"/v1/messages/{res['id']}")
    assert status == 200 and (view["template"], view["template_version"], view["subject"]) == \
        (t["alias"], 1, "Grüße, Zoë ✓"), view


def test_send_pins_a_version_and_refuses_bad_forms(api: Api, local_stack: Any, template: Callable[..., dict]) -> None:
    t = template(subject="v1 {{x}}", text="first {{x}}")
    _call(api, "PUT", f"/v1/templates/{t['alias']}", {"subject": "v2 {{x}}", "text": "second {{x}}"})
    rcpt = f"pin-{secrets.token_hex(3)}@accept.test"
    status, res = _call(api, "POST", "/v1/messages", {"from": FROM, "to": rcpt, "template": t["alias"],
                                                     "template_version": 1, "variables": {"x": "ok"}})
    assert status == 202, res
    msg = _delivered(api, local_stack, res["id"], rcpt)
    assert msg["Subject"] == "v1 ok" and _part(msg, "plain").strip() == "first ok"
    base = {"from": FROM, "to": "x@accept.test"}
    for body, field in [({"template": t["alias"], "subject": "both"}, "subject"),
                        ({"template": t["alias"], "html": "<p>both</p>"}, "html"),
                        ({"template": "no-such-template", "variables": {}}, "template"),
                        ({"template": t["alias"], "template_version": 9, "variables": {"x": 1}}, "template_version"),
                        ({"template": t["alias"]}, "variables.x"),
                        ({"subject": "s", "text": "t", "variables": {"x": 1}}, "variables")]:
        status, err = _call(api, "POST", "/v1/messages", {**base, **body})
        assert status == 422 and err["error"]["field"] == field, (body, err)


def test_batch_renders_per_message_and_reports_each_index(
        api: Api, local_stack: Any, template: Callable[..., dict]) -> None:
    t = template(subject="Hi {{first_name}}", html="<p>Code {{code}}</p>")
    run = secrets.token_hex(3)
    messages: list[dict[str, Any]] = [
        {"from": FROM, "to": f"b{i}-{run}@accept.test", "template": t["alias"],
         "variables": {"first_name": f"N{i}", "code": f"C{i}"}} for i in range(3)]
    messages.append({"from": FROM, "to": f"b3-{run}@accept.test", "template": t["alias"], "variables": {"code": 1}})
    status, out = _call(api, "POST", "/v1/messages/batch", {"messages": messages})
    assert status == 200 and (out["accepted"], out["rejected"]) == (3, 1), out
    bad = out["results"][3]
    assert bad["status"] == 422 and bad["error"]["field"] == "variables.first_name", bad
    for i in range(3):
        msg = _delivered(api, local_stack, out["results"][i]["id"], f"b{i}-{run}@accept.test")
        assert msg["Subject"] == f"Hi N{i}" and f"Code C{i}" in _part(msg, "html")


def test_delete_removes_the_alias_for_new_sends_only(api: Api, local_stack: Any, template: Callable[..., dict]) -> None:
    t = template(subject="Bye {{x}}", text="gone soon {{x}}")
    rcpt = f"del-{secrets.token_hex(3)}@accept.test"
    status, res = _call(api, "POST", "/v1/messages", {"from": FROM, "to": rcpt, "template": t["alias"],
                                                     "variables": {"x": "now"}})
    assert status == 202, res
    status, out = _call(api, "DELETE", f"/v1/templates/{t['alias']}")
    assert status == 200 and out == {"alias": t["alias"], "deleted": True}, out
    assert _call(api, "GET", f"/v1/templates/{t['alias']}")[0] == 404
    assert _call(api, "DELETE", f"/v1/templates/{t['alias']}")[0] == 404
    status, err = _call(api, "POST", "/v1/messages", {"from": FROM, "to": rcpt, "template": t["alias"],
                                                     "variables": {"x": 1}})
    assert status == 422 and err["error"]["field"] == "template", err
    assert _delivered(api, local_stack, res["id"], rcpt)["Subject"] == "Bye now"  # accepted before: unaffected


def test_scopes_read_may_preview_only_admin_may_write(api: Api, local_stack: Any,
                                                      template: Callable[..., dict]) -> None:
    from outpost.api.auth import KeyRing
    from outpost.bootstrap import api_keys_table

    reader, _ = KeyRing(api_keys_table()).create("template reader", ["read"])
    t = template(subject="s", html="<p>{{x}}</p>")
    assert _call(api, "GET", f"/v1/templates/{t['alias']}", key=reader)[0] == 200
    assert _call(api, "POST", f"/v1/templates/{t['alias']}/render", {"variables": {"x": 1}}, key=reader)[0] == 200
    status, err = _call(api, "PUT", f"/v1/templates/{t['alias']}", {"html": "x"}, key=reader)
    assert status == 403, err
    assert _call(api, "DELETE", f"/v1/templates/{t['alias']}", key=reader)[0] == 403
