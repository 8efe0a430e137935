"""A batch's shaped CSS inlining over the local stack: what the real MX receives for a batch
message is what the same message sent alone gives (r18a: a `data-css-inline="ignore"` value got
the style of the shape built for another message; the stored message carried it)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.conftest import Api
from tests.integration.test_api_templates import FINAL, FROM, _call, _part

pytestmark = pytest.mark.timeout(300)


def test_a_batch_message_saying_data_css_inline_ignore_reaches_the_mx_unstyled(api: Api, local_stack: Any) -> None:
    alias = f"exact-{secrets.token_hex(4)}"
    html = '<style>p { color: red }</style><p data-css-inline="{{mode}}">Hi {{name}}</p>'
    status, body = _call(api, "POST", "/v1/templates", {"alias": alias, "name": alias, "subject": "s", "html": html})
    assert status == 201, body
    try:
        run = secrets.token_hex(3)
        modes = ["keep", "ignore", "keep", "ignore"]  # each skeleton seen twice: a shape is built and used
        messages = [{"from": FROM, "to": f"x{i}-{run}@accept.test", "template": alias,
                     "variables": {"mode": m, "name": f"N{i}"}} for i, m in enumerate(modes)]
        status, out = _call(api, "POST", "/v1/messages/batch", {"messages": messages})
        assert status == 200 and out["accepted"] == 4, out
        server = local_stack.mx["accept.test"].server
        for i, mode in enumerate(modes):
            rcpt = f"x{i}-{run}@accept.test"
            view = api.wait_for(out["results"][i]["id"],
                                lambda b: all(r["state"] in FINAL for r in b["recipients"]), timeout=90)
            assert view["recipients"][0]["state"] == "delivered", view
            got = [r for r in server.received if rcpt in r.rcpt_tos]
            assert got and got[-1].tls
            sent = _part(got[-1].message, "html")
            assert f"Hi N{i}" in sent
            if mode == "ignore":
                assert 'data-css-inline="ignore">' in sent and "color: red" not in sent, sent
            else:
                assert 'style="color: red;"' in sent, sent
    finally:
        _call(api, "DELETE", f"/v1/templates/{alias}")
