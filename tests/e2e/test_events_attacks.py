"""GET /v1/events against a hostile client (issue 12, an attacker's review), on the local stack
(the real API over DynamoDB Local): page sizes out of range, types with injection characters,
`since` at the ends of time, and cursors forged with the (public) query digest. Every answer is
a 200 or a 4xx naming the field; never a 500, never another partition's items."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from urllib.parse import quote

import pytest

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("limit", ["0", "-1", str(10**9), "1e3", "", "1;DROP"])
def test_page_sizes_out_of_range_are_422_limit(api, limit):
    status, err = api.call("GET", f"/v1/events?limit={quote(limit)}")
    assert status == 422 and err["error"]["field"] == "limit", (status, err)


@pytest.mark.parametrize("type_", ["message.delivered' OR '1'='1", "message.delivered\n", "#", "gsi3pk",
                                   "message.delivered%00", "message.*", "x" * 5000])
def test_types_outside_the_list_are_422_type(api, type_):
    status, err = api.call("GET", f"/v1/events?type={quote(type_)}")
    assert status in (414, 422) and (status == 414 or err["error"]["field"] == "type"), (status, err)


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:05+02:01",
                                   "9999-12-31T23:59:59-23:59"])
def test_since_at_the_ends_of_time_answers(api, since):
    started = time.monotonic()
    status, body = api.call("GET", f"/v1/events?since={quote(since)}&limit=100")
    assert status == 200, body
    assert time.monotonic() - started < 60  # the day walk is bounded by retention, not by `since`


def _cursor(doc: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


def test_a_forged_cursor_with_the_right_digest_is_400_or_stays_in_its_partition(api):
    today = time.strftime("%Y-%m-%d", time.gmtime())
    digest = hashlib.sha256(json.dumps([None, None, None, False]).encode()).hexdigest()[:16]
    forged = [
        {"p": today, "q": digest, "k": {"pk": "MSG#x", "sk": "META", "gsi3pk": "SUPP#x", "gsi3sk": "z"}},
        {"p": "1970-01-01", "q": digest, "k": None},
        {"p": today, "q": digest, "k": {"pk": {"S": "x"}, "sk": "x", "gsi3pk": f"EVTDAY#{today}", "gsi3sk": "z"}},
        {"p": today, "q": digest, "k": {"pk": "x", "sk": "x", "gsi3pk": f"EVTDAY#{today}", "gsi3sk": "z",
                                         "extra": "x"}},
    ]
    for doc in forged:
        status, err = api.call("GET", f"/v1/events?cursor={_cursor(doc)}")
        assert status == 400 and err["error"]["field"] == "cursor", (doc, status, err)
    # The table-key half of a start key is the attacker's: a key that matches no item still
    # reads only this day's events (or is refused), never a 500.
    doc = {"p": today, "q": digest, "k": {"pk": "MSG#zzzz", "sk": "RCPT#000", "gsi3pk": f"EVTDAY#{today}",
                                          "gsi3sk": "9999"}}
    status, body = api.call("GET", f"/v1/events?limit=100&cursor={_cursor(doc)}")
    assert status in (200, 400), (status, body)
    if status == 200:
        assert all(e["id"].startswith("evt_") and e["timestamp"].startswith(today) for e in body["items"])
