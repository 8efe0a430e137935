"""Scheduled sending and cancel over HTTP on the embedded local stack (issue 14 item 3): the
routes as the contract writes them, in real time (a few seconds ahead), through the local API
Gateway, moto's SQS (the job's delay, then the sender's hop), the real sender and a real MX.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from outpost.clock import epoch_of, iso
from outpost_local.stack import SENDING_DOMAIN

pytestmark = pytest.mark.timeout(120)
BLANK_ID = "0" * 26


def _message(to: str, **extra):
    return {"from": f"Shop <shop@{SENDING_DOMAIN}>", "to": [to], "subject": "Later", "text": "Hello.", **extra}


def _key(scopes, **kw):
    from outpost.api.auth import KeyRing
    from outpost.bootstrap import api_keys_table

    return KeyRing(api_keys_table()).create("scheduled-test", scopes, **kw)[0]


def test_scheduled_mail_waits_for_send_at_then_is_delivered(api, local_stack):
    at = time.time() + 4
    status, res = api.call("POST", "/v1/messages", _message("sched-http@accept.test", send_at=iso(at)))
    assert status == 202, res
    assert res["recipients"] == [{"address": "sched-http@accept.test", "status": "scheduled"}]
    status, body = api.call("GET", f"/v1/messages/{res['id']}")
    assert status == 200 and body["status"] == "scheduled" and body["send_at"] == iso(at)
    status, page = api.call("GET", "/v1/messages?recipient=sched-http@accept.test&status=scheduled")
    assert status == 200 and [i["id"] for i in page["items"]] == [res["id"]]
    body = api.wait_for(res["id"], lambda b: b["recipients"][0]["state"] not in ("scheduled", "queued"))
    assert body["recipients"][0]["state"] == "delivered", body
    assert epoch_of(body["recipients"][0]["attempts"][0]["at"]) >= at  # not before its time
    server = local_stack.mx["accept.test"].server
    assert [r for r in server.received if f"<{res['id']}@" in r.data.decode("ascii", "replace")]
    # The events, from the table's stream: scheduled at acceptance, queued at send_at, delivered.
    want = ["message.scheduled", "message.queued", "message.delivered"]
    deadline, types = time.monotonic() + 30, []
    while types != want and time.monotonic() < deadline:
        status, events = api.call("GET", f"/v1/events?message_id={res['id']}")
        types = [e["type"] for e in reversed(events["items"])] if status == 200 else []
        time.sleep(0.3)
    assert types == want


def test_cancel_a_scheduled_message_over_http(api, local_stack):
    at = datetime.fromtimestamp(time.time() + 3600, UTC).isoformat()  # "+00:00": an offset, not Z
    status, res = api.call("POST", "/v1/messages", _message("sched-cancel@accept.test", send_at=at))
    assert status == 202 and res["recipients"][0]["status"] == "scheduled", res
    mid = res["id"]
    reader = _key(["read"])
    assert api.call("POST", f"/v1/messages/{mid}/cancel", key=reader)[0] == 403  # scope send
    other = _key(["send"], domains=["elsewhere.test"])
    status, err = api.call("POST", f"/v1/messages/{mid}/cancel", key=other)
    assert status == 403 and err["error"]["field"] == "id"
    status, out = api.call("POST", f"/v1/messages/{mid}/cancel", key=_key(["send"], domains=[SENDING_DOMAIN]))
    assert status == 200, out
    assert out == {"id": mid, "canceled": 1, "recipients": [
        {"address": "sched-cancel@accept.test", "status": "canceled", "in_transaction": False}]}
    assert api.call("POST", f"/v1/messages/{mid}/cancel") == (200, out)  # idempotent
    status, body = api.call("GET", f"/v1/messages/{mid}")
    assert body["status"] == "canceled" and body["recipients"][0]["state"] == "canceled"
    status, page = api.call("GET", "/v1/messages?recipient=sched-cancel@accept.test&status=canceled")
    assert [i["id"] for i in page["items"]] == [mid]
    assert api.call("POST", f"/v1/messages/{BLANK_ID}/cancel")[0] == 404
    deadline, types = time.monotonic() + 30, []
    while types != ["message.scheduled", "message.canceled"] and time.monotonic() < deadline:
        types = [e["type"] for e in reversed(api.call("GET", f"/v1/events?message_id={mid}")[1]["items"])]
        time.sleep(0.3)
    assert types == ["message.scheduled", "message.canceled"]


def test_a_delivered_message_answers_cancel_with_its_states(api):
    status, res = api.call("POST", "/v1/messages", _message("sched-done@accept.test"))
    assert status == 202
    api.wait_for(res["id"], lambda b: b["recipients"][0]["state"] == "delivered")
    status, out = api.call("POST", f"/v1/messages/{res['id']}/cancel")
    assert status == 200 and out["canceled"] == 0 and out["recipients"][0]["status"] == "delivered"


@pytest.mark.parametrize("send_at", ["2030-01-01T09:00:00", "tomorrow", 1893488400])
def test_a_send_at_without_an_offset_is_422_naming_it(api, send_at):
    status, err = api.call("POST", "/v1/messages", _message("x@accept.test", send_at=send_at))
    assert status == 422 and err["error"]["field"] == "send_at", err


def test_more_than_30_days_ahead_is_422_naming_send_at(api):
    status, err = api.call("POST", "/v1/messages", _message("x@accept.test", send_at=iso(time.time() + 31 * 86400)))
    assert status == 422 and err["error"]["field"] == "send_at", err
    status, out = api.call("POST", "/v1/messages/batch", {"messages": [
        _message("x@accept.test", send_at=iso(time.time() + 31 * 86400))]})
    assert status == 200 and out["results"][0]["error"]["field"] == "send_at", out


def test_on_a_moved_clock_early_jobs_do_nothing_and_the_message_goes_at_its_time(api, local_stack):
    """bootstrap's clock (bootstrap.set_clock), read by the API's services, the sender and the
    sweeper of the running local stack: two hours pass in a few seconds, through the real
    queue, sender handler and MX."""
    from outpost import bootstrap
    from outpost.models import QueueJob

    shift = [0.0]
    bootstrap.set_clock(lambda: time.time() + shift[0])
    try:
        at = time.time() + 2 * 3600
        status, res = api.call("POST", "/v1/messages", _message("sched-clock@accept.test", send_at=iso(at)))
        assert status == 202 and res["recipients"][0]["status"] == "scheduled", res
        mid = res["id"]
        shift[0] = 3600  # an hour before its time: a duplicate job through SQS and the sender
        bootstrap.job_queue().send(QueueJob(message_id=mid))
        deadline = time.monotonic() + 30
        while bootstrap.message_store().load(mid).meta.job_token is None:  # the job ran (and requeued)
            assert time.monotonic() < deadline, "the job never ran"
            time.sleep(0.2)
        assert not [o for o in bootstrap.message_store().overdue(bootstrap.now()) if o.message_id == mid]
        status, body = api.call("GET", f"/v1/messages/{mid}")
        assert body["recipients"][0]["state"] == "scheduled" and not body["recipients"][0]["attempts"]
        server = local_stack.mx["accept.test"].server
        assert not [r for r in server.received if f"<{mid}@" in r.data.decode("ascii", "replace")]
        shift[0] = 2 * 3600 + 1  # past its time: the next job delivers it
        bootstrap.job_queue().send(QueueJob(message_id=mid))
        body = api.wait_for(mid, lambda b: b["recipients"][0]["state"] not in ("scheduled", "queued"))
        assert body["recipients"][0]["state"] == "delivered", body
        assert epoch_of(body["recipients"][0]["attempts"][0]["at"]) >= at
        assert [r for r in server.received if f"<{mid}@" in r.data.decode("ascii", "replace")]
    finally:
        bootstrap.set_clock(None)
