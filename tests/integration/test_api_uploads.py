"""Large attachments through presigned S3 uploads, on the embedded local stack.

API Gateway hands Lambda at most 6 MB of request body, so a message up to SES's 40 MB can only
be reached out of band: POST /v1/uploads answers a presigned SigV4 PUT URL (moto's S3 server
accepts it; it does not check signatures), the caller PUTs the bytes, then sends with the
upload_id; the sender reads the upload from S3 while it builds the MIME message and delivers
it to a real MX.
"""

from __future__ import annotations

import email
import email.policy
import os
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlsplit

import pytest

from outpost_local.stack import SENDING_DOMAIN

pytestmark = pytest.mark.timeout(120)
SIZE = 8 * 1024 * 1024  # more than a whole API request may carry


def _put(upload: dict, data: bytes, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(upload["url"], data=data, method=upload["method"],
                                 headers=headers if headers is not None else upload["headers"])
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _message(**extra):
    return {"from": f"Shop <shop@{SENDING_DOMAIN}>", "to": ["someone@accept.test"],
            "subject": "Your archive", "text": "Attached.", **extra}


@pytest.fixture(scope="module")
def uploaded(api):
    data = os.urandom(SIZE)
    status, up = api.call("POST", "/v1/uploads", {"filename": "archive.bin",
                                                  "content_type": "application/zip", "size": SIZE})
    assert status == 201, up
    assert up["method"] == "PUT" and up["expires_in"] == 900 and len(up["upload_id"]) == 32
    assert up["headers"] == {"Content-Type": "application/zip", "Content-Length": str(SIZE)}
    assert _put(up, data) == 200
    return up, data


def test_upload_url_needs_the_send_scope_and_a_key(api):
    status, body = api.call("POST", "/v1/uploads", {"filename": "a", "size": 1}, key=None)
    assert status == 401, body


def test_presigned_put_is_sigv4_and_signs_the_declared_size(api):
    status, up = api.call("POST", "/v1/uploads", {"filename": "a.txt", "content_type": "text/plain",
                                                  "size": 10})
    assert status == 201, up
    # moto does not check signatures, so this asserts what S3 will check: a SigV4 URL whose
    # signed headers include Content-Length and Content-Type (a PUT of another size is refused).
    query = parse_qs(urlsplit(up["url"]).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["900"]
    assert query["X-Amz-SignedHeaders"] == ["content-length;content-type;host"]
    assert urlsplit(up["url"]).path.endswith(f"/uploads/{up['upload_id']}")


def test_an_8_mb_upload_is_delivered_byte_for_byte(api, local_stack, uploaded):
    up, data = uploaded
    status, res = api.call("POST", "/v1/messages", _message(attachments=[
        {"filename": "archive.zip", "content_type": "application/zip", "upload_id": up["upload_id"]}]))
    assert status == 202, res
    body = api.wait_for(res["id"], lambda b: b["recipients"][0]["state"] not in ("queued", "deferred"))
    assert body["recipients"][0]["state"] == "delivered", body
    server = local_stack.mx["accept.test"].server
    got = [r for r in server.received if f"<{res['id']}@" in r.data.decode("ascii", "replace")]
    assert got, "the MX did not receive the message"
    msg = email.message_from_bytes(got[-1].data, policy=email.policy.SMTP)
    parts = [p for p in msg.iter_attachments() if p.get_filename() == "archive.zip"]
    assert len(parts) == 1 and parts[0].get_content_type() == "application/zip"
    assert parts[0].get_payload(decode=True) == data


def test_an_unknown_upload_is_a_403_naming_the_attachment(api):
    # The same answer as another key's upload: nothing to learn about other keys' ids.
    status, res = api.call("POST", "/v1/messages", _message(attachments=[
        {"filename": "a.txt", "content": "AA=="},
        {"filename": "b.bin", "upload_id": "0" * 32}]))
    assert status == 403, res
    assert res["error"]["field"] == "attachments[1].upload_id"


def test_over_40_mb_in_all_is_refused_with_413(api, uploaded):
    up, _ = uploaded
    # Five uses of the 8 MB upload: 40 MB raw, about 53 MB once base64-encoded (HEAD sizes).
    status, res = api.call("POST", "/v1/messages", _message(attachments=[
        {"filename": f"part{i}.zip", "upload_id": up["upload_id"]} for i in range(5)]))
    assert status == 413, res
    assert res["error"]["code"] == "payload_too_large" and res["error"]["field"] == "attachments"
    # A declared size over the documented maximum is refused before any URL is signed (422:
    # the request itself is small).
    status, res = api.call("POST", "/v1/uploads", {"filename": "huge.bin", "size": 41 * 1024 * 1024})
    assert status == 422 and res["error"]["field"] == "size", res


def _other_key(scopes=("send",)) -> str:
    from outpost.api.auth import KeyRing
    from outpost.bootstrap import api_keys_table

    return KeyRing(api_keys_table()).create("another tenant", list(scopes))[0]


def test_an_upload_belongs_to_the_key_that_created_it(api, uploaded):
    """Issue 8, item 25: an upload_id is not a bearer token; only its creator may attach it."""
    up, _ = uploaded
    other = _other_key()
    status, res = api.call("POST", "/v1/messages", _message(attachments=[
        {"filename": "a.txt", "content": "AA=="},
        {"filename": "stolen.zip", "upload_id": up["upload_id"]}]), key=other)
    assert status == 403, res
    assert res["error"]["field"] == "attachments[1].upload_id"
    # The same in a batch: the item is refused, naming its attachment.
    status, res = api.call("POST", "/v1/messages/batch", {"messages": [_message(attachments=[
        {"filename": "stolen.zip", "upload_id": up["upload_id"]}])]}, key=other)
    assert status == 200 and res["results"][0]["status"] == 403, res
    assert res["results"][0]["error"]["field"] == "attachments[0].upload_id"
    # Its own upload, that key may send.
    status, mine = api.call("POST", "/v1/uploads", {"filename": "own.txt", "content_type": "text/plain",
                                                    "size": 5}, key=other)
    assert status == 201 and _put(mine, b"hello") == 200
    status, res = api.call("POST", "/v1/messages", _message(attachments=[
        {"filename": "own.txt", "upload_id": mine["upload_id"]}]), key=other)
    assert status == 202, res
    # ...and the creator of the first may not send the other key's.
    status, res = api.call("POST", "/v1/messages", _message(attachments=[
        {"filename": "own.txt", "upload_id": mine["upload_id"]}]))
    assert status == 403 and res["error"]["field"] == "attachments[0].upload_id", res


def test_uploads_per_key_per_day_are_capped(api):
    import time

    from outpost.api.auth import KeyRing
    from outpost.api.service import UPLOADS_PER_KEY_PER_DAY
    from outpost.bootstrap import api_keys_table, aws, settings

    key, item = KeyRing(api_keys_table()).create("busy tenant", ["send"])
    key_id = item["key_id"]
    # This key has already created all but one of today's uploads (the counter the API keeps).
    today = time.strftime("%Y-%m-%d", time.gmtime())
    aws("dynamodb").put_item(TableName=settings().messages_table, Item={
        "pk": {"S": f"UPLOADS#{key_id}"}, "sk": {"S": f"DAY#{today}"},
        "uploads": {"N": str(UPLOADS_PER_KEY_PER_DAY - 1)}})
    body = {"filename": "a.txt", "content_type": "text/plain", "size": 3}
    assert api.call("POST", "/v1/uploads", body, key=key)[0] == 201
    status, res = api.call("POST", "/v1/uploads", body, key=key)
    assert status == 429 and res["error"]["code"] == "upload_limit_reached", res
    # Other keys are not affected.
    assert api.call("POST", "/v1/uploads", body)[0] == 201
