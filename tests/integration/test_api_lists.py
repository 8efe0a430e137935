"""List queries on a large-ish table (issue 8, items 21 and 22), over HTTP on the local stack.

Item 21: a filter on a rare value (`status=complained`) over 30 days of recipients used to walk
every partition in one request (12,400 DynamoDB queries in the report, then a 502 without a
cursor). Each request now has a budget of DynamoDB queries and items read; it answers a partial
page, possibly empty, with a cursor, and following the cursors finds every match. The queries
are counted on the real botocore client the handler uses (an event hook), not on a fake.

Item 22: a forged cursor (missing or extra key attributes, a key from another query, outside
the query's range, not JSON) is a 400 naming `cursor`, never a DynamoDB error answered 503.
"""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import quote

import pytest
from api_rig import call, start_stack, stop_stack

from outpost.api.service import LIST_MAX_QUERIES, LIST_READ_PER_QUERY

pytestmark = pytest.mark.timeout(300)
DAYS = 30
PER_DAY = 100  # 3,000 recipients
RARE = {(2, 17), (15, 3), (28, 90)}  # (days ago, n): the only complained recipients


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


@pytest.fixture(scope="module")
def stack():
    st = start_stack("127.0.12", OUTPOST_API_RATE="10000", OUTPOST_API_BURST="10000")
    from outpost.bootstrap import aws, settings

    ddb, table = aws("dynamodb"), settings().messages_table
    now = time.time()
    items = []
    for d in range(DAYS):
        for n in range(PER_DAY):
            ts = now - d * 86400 - n * 10 - 60
            created = _iso(ts)
            mid = f"seed{d:02d}{n:03d}"
            state = "complained" if (d, n) in RARE else "delivered"
            items.append({"pk": {"S": f"MSG#{mid}"}, "sk": {"S": "RCPT#000"},
                          "index": {"N": "0"}, "address": {"S": f"r{n}@accept.test"},
                          "state": {"S": state}, "created_at": {"S": created},
                          "updated_at": {"S": created}, "from": {"S": "hello@outpost.test"},
                          "subject": {"S": "seed"}, "gsi3pk": {"S": f"DAY#{created[:10]}"},
                          "gsi3sk": {"S": f"{created}#{mid}#000"},
                          "gsi1pk": {"S": f"RCPT#r{n}@accept.test"}, "gsi1sk": {"S": f"{created}#{mid}"}})
    for i in range(0, len(items), 25):
        req = {table: [{"PutRequest": {"Item": it}} for it in items[i:i + 25]]}
        while req:
            req = ddb.batch_write_item(RequestItems=req).get("UnprocessedItems") or {}
    yield st
    stop_stack(st)


@pytest.fixture
def queries():
    """Counts the DynamoDB Query calls on MessagesTable of the handler's own client (the one
    client of the process: the events function's webhooks sink, fed by the stack's stream,
    queries WebhooksTable on it too, and is not the request's)."""
    from outpost.bootstrap import aws, settings

    calls: list[dict] = []

    def count(params, **_):
        if params.get("TableName") == settings().messages_table:
            calls.append(params)

    events = aws("dynamodb").meta.events
    events.register("before-parameter-build.dynamodb.Query", count)
    yield calls
    events.unregister("before-parameter-build.dynamodb.Query", count)


def test_a_rare_filter_answers_bounded_pages_and_the_cursors_find_every_match(stack, queries):
    found, pages, cursor, worst, slowest = [], 0, None, 0, 0.0
    while True:
        queries.clear()
        q = "/v1/messages?status=complained&limit=50" + (f"&cursor={cursor}" if cursor else "")
        t0 = time.monotonic()
        status, _, page = call(stack, "GET", q)
        slowest = max(slowest, time.monotonic() - t0)
        assert status == 200, page
        pages += 1
        # The budget: queries per request, and items read per query (Limit applies before
        # the filter, so this bounds the items DynamoDB reads for one request).
        assert len(queries) <= LIST_MAX_QUERIES, len(queries)
        assert all(c["Limit"] <= LIST_READ_PER_QUERY for c in queries)
        worst = max(worst, len(queries))
        assert {i["status"] for i in page["items"]} <= {"complained"}
        found.extend(i["id"] for i in page["items"])
        cursor = page["next_cursor"]
        if pages == 1:
            assert cursor, "the first page of a long walk must come back with a cursor"
        if not cursor:
            break
        assert pages < 100
    assert sorted(found) == sorted(f"seed{d:02d}{n:03d}" for d, n in RARE)
    assert pages > 1 and worst == LIST_MAX_QUERIES
    print(f"\n{pages} pages, at most {worst} queries and {slowest:.2f} s per request")


def test_an_unfiltered_walk_still_fills_its_pages(stack, queries):
    status, _, page = call(stack, "GET", "/v1/messages?limit=100")
    assert status == 200 and len(page["items"]) == 100 and page["next_cursor"]
    assert len(queries) <= 2
    seen = {i["id"] for i in page["items"]}
    status, _, nxt = call(stack, "GET", f"/v1/messages?limit=100&cursor={page['next_cursor']}")
    assert status == 200 and len(nxt["items"]) == 100 and not seen & {i["id"] for i in nxt["items"]}


def _forge(doc) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


def _decode(cursor: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))


@pytest.mark.parametrize("path", ["/v1/messages?limit=1", "/v1/messages?limit=1&recipient=r5@accept.test",
                                  "/v1/bounces?limit=1", "/v1/suppressions?limit=1"])
def test_forged_cursors_are_400_naming_cursor(stack, path):
    if "suppressions" in path:
        call(stack, "PUT", "/v1/suppressions/listed@accept.test")
        call(stack, "PUT", "/v1/suppressions/listed2@accept.test")
    if "bounces" in path:
        from outpost.bootstrap import aws, settings

        for n in range(2):
            aws("dynamodb").put_item(TableName=settings().messages_table, Item={
                "pk": {"S": f"MSG#b{n}"}, "sk": {"S": f"BOUNCE#000#{n}"}, "type": {"S": "bounce"},
                "received_at": {"S": _iso(time.time() - n)}, "address": {"S": "x@accept.test"}})
    status, _, page = call(stack, "GET", path)
    assert status == 200 and page["next_cursor"], page
    good = _decode(page["next_cursor"])
    key = dict(good["k"])
    first = sorted(key)[0]
    forged = {
        "missing attribute": dict(good, k={k: v for k, v in key.items() if k != first}),
        "extra attribute": dict(good, k=dict(key, extra="x")),
        "only the table key": dict(good, k={"pk": key.get("pk", "x"), "sk": key.get("sk", "x")}),
        "number value": dict(good, k=dict(key, **{first: 5})),
        "empty value": dict(good, k=dict(key, **{first: ""})),
        "list key": dict(good, k=[1, 2]),
        "other query": dict(good, q="0" * 16),
        "no digest": {"p": good["p"], "k": key},
        "unknown partition": dict(good, p="1999-01-01"),
        "not an object": [good["p"], key],
    }
    for label, doc in forged.items():
        status, _, out = call(stack, "GET", f"{path}&cursor={_forge(doc)}")
        assert (status, out["error"]["field"]) == (400, "cursor"), (label, status, out)
    nested = base64.urlsafe_b64encode(b"[" * 1536).decode().rstrip("=")  # deeper than json recurses
    for raw in ("not-a-cursor", "%%%", "e30", quote(_forge("x")), "A" * 2049, nested):
        status, _, out = call(stack, "GET", f"{path}&cursor={raw}")
        assert status in (400, 422) and out["error"]["field"] == "cursor", (raw, status, out)
    # The genuine cursor still works.
    status, _, out = call(stack, "GET", f"{path}&cursor={page['next_cursor']}")
    assert status == 200, out
