"""`make demo`: send a few messages through the HTTP API on the local stack and print what
happened to each recipient. Exits 0 only if every outcome is the one expected.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from .latency_mx import show_pipelining
from .stack import SENDING_DOMAIN, LocalStack, StackConfig

FINAL = {"delivered", "bounced", "expired", "suppressed", "complained"}


def http(stack: LocalStack, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(stack.api.url + path, data=data, method=method, headers={
        "Authorization": f"Bearer {stack.api_key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def send(stack: LocalStack, to: list[str], subject: str) -> str:
    status, body = http(stack, "POST", "/v1/messages", {
        "from": f"Outpost Demo <hello@{SENDING_DOMAIN}>", "to": to, "subject": subject,
        "text": f"{subject}\n\nSent by `make demo` through the embedded local stack.",
        "html": f"<p>{subject}</p><p>Sent by <code>make demo</code>.</p>"})
    if status != 202:
        raise SystemExit(f"POST /v1/messages answered {status}: {body}")
    return body["id"]


def send_smtp(stack: LocalStack, to: str, subject: str) -> str:
    """One message over SMTP submission (STARTTLS on :2587, the certificate verified against
    the test CA, AUTH with the API key); the reply names its Outpost id."""
    import smtplib
    import ssl

    message = (f"From: Outpost demo <hello@{SENDING_DOMAIN}>\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n"
               "Hello from smtplib.\r\n").encode()
    with smtplib.SMTP(stack.config.ip(1), stack.submission.ports["starttls"], timeout=30) as s:
        s.starttls(context=ssl.create_default_context(cafile=str(stack.pki.ca_bundle)))
        s.login("outpost", stack.api_key)
        s.mail(f"hello@{SENDING_DOMAIN}")
        s.rcpt(to)
        code, text = s.data(message)
    print(f"  SMTP submission -> {code} {text.decode()}")
    return text.decode().rsplit(" ", 1)[-1]


def wait(stack: LocalStack, message_id: str, until: Any, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, body = http(stack, "GET", f"/v1/messages/{message_id}")
        if status == 200 and until(body):
            return body
        if time.monotonic() > deadline:
            return body
        time.sleep(0.3)


def all_final(body: dict) -> bool:
    return all(r["state"] in FINAL for r in body["recipients"])


def main(argv: list[str] | None = None) -> int:
    import signal

    def _term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)  # so the stack (Postfix, moto) is always stopped
    print("Starting the embedded local stack (moto, DynamoDB Local, DNS, MX hosts, API on :3000)...", flush=True)
    with LocalStack(StackConfig()) as stack:
        print(f"  API {stack.api.url}   SMTP port {stack.smtp_port}   DNS {stack.dns.host}:{stack.dns.port}")
        print(f"  DynamoDB engine: {stack.dynamodb_engine} at {stack.dynamodb_endpoint}"
              f" ({stack.dynamodb_engine_reason})")
        for d, mx in stack.mx.items():
            print(f"  MX {d:<18} {mx.ip:<11} {mx.kind}")
        expect: dict[str, str] = {
            "alice@accept.test": "delivered",
            "nobody@reject.test": "bounced",
            "alice@reject.test": "delivered",
            "bob@greylist.test": "delivered",
            "carol@bounce-later.test": "bounced",
        }
        if "postfix.test" in stack.mx:
            expect.update({"alice@postfix.test": "delivered", "ghost@postfix.test": "bounced"})
        from . import webhook_demo

        hooked_at = time.time()
        webhook_demo.register(stack, http)  # before sending: every event from here on goes to it
        m1 = send(stack, ["alice@accept.test"], "Your receipt #1001")
        m2 = send(stack, ["nobody@reject.test", "alice@reject.test"], "Password reset")
        m3 = send(stack, ["bob@greylist.test"], "Alert: disk 91% full")
        m4 = send(stack, ["carol@bounce-later.test"], "Welcome aboard")
        ids = [m1, m2, m3, m4]
        ids.append(send_smtp(stack, "dave@accept.test", "Sent over SMTP submission"))  # issue 13
        expect["dave@accept.test"] = "delivered"
        if "postfix.test" in stack.mx:
            ids.append(send(stack, ["alice@postfix.test", "ghost@postfix.test"], "Via Postfix"))
        results: dict[str, dict] = {}
        def all_bounced(b: dict) -> bool:
            return all(r["state"] == "bounced" for r in b["recipients"])

        for mid in ids:
            # m4 is delivered first; the DSN arrives later and turns it into a bounce
            body = wait(stack, mid, all_bounced if mid == m4 else all_final, 90)
            for r in body["recipients"]:
                results[r["address"]] = dict(r, message_id=mid)
        # A second message to the hard-bounced address is suppressed at the API.
        status, again = http(stack, "POST", "/v1/messages", {
            "from": f"hello@{SENDING_DOMAIN}", "to": "nobody@reject.test", "subject": "Again", "text": "x"})
        expect["nobody@reject.test (again)"] = "suppressed"
        state = again["recipients"][0]["status"] if status == 202 else f"HTTP {status}"
        results["nobody@reject.test (again)"] = {"state": state, "attempts": [], "message_id": again.get("id", "")}
        _, supp = http(stack, "GET", "/v1/suppressions/nobody@reject.test")

        print("\nPer-recipient outcomes (GET /v1/messages/{id}):")
        ok = True
        for addr, want in expect.items():
            r = results.get(addr, {"state": "missing", "attempts": []})
            got = r["state"]
            attempts = r.get("attempts") or []
            path = " -> ".join(f"{a.get('code') or ''} {a.get('status', '')}".strip() for a in attempts) or "-"
            extra = ""
            if r.get("bounce"):
                b = r["bounce"]
                extra = f"  [{b.get('source', '')} {b.get('status', '')} {b.get('kind', '')}/{b.get('reason', '')}]"
            tls = next((a["tls"] for a in reversed(attempts) if a.get("tls")), None)
            tls_s = f"  TLS {tls['version']} verified={tls['verified']}" if tls else ""
            mark = "ok " if got == want else "BAD"
            ok &= got == want
            print(f"  {mark} {addr:<28} {got:<10} (expected {want:<9}) attempts: {path}{extra}{tls_s}")
        print(f"\nGET /v1/suppressions/nobody@reject.test -> {json.dumps(supp)}")
        ok &= _print_events(stack, ids, results)
        hooked = {a: w for a, w in expect.items() if " " not in a and w in ("delivered", "bounced")}
        # The events come from MessagesTable's stream (the events function), as in AWS.
        ok &= webhook_demo.show(stack, hooked, None, since=hooked_at)
        from . import template_demo

        ok &= template_demo.run(stack, http)  # issue 14: a stored template, previewed and sent
        dkim = _verify_dkim(stack)
        print(f"DKIM at the receiving MX (keys from the local DNS): {dkim}")
        ok &= dkim.startswith("pass")
        from . import schedule_demo

        ok &= schedule_demo.run(stack, http)  # issue 14: send_at, then cancel
        ok &= schedule_demo.run_smtp(stack, http)  # s17d: Outpost-Send-At over SMTP submission

        from . import sandbox_demo

        ok &= sandbox_demo.run(stack, http)  # issue 14: the simulator's addresses and a test-mode key
        ok &= show_pipelining(stack.pki)  # issue 15: MAIL, RCPT and DATA in one round trip
        from . import http_api_demo

        ok &= http_api_demo.run(stack, wait)  # issue 15 item 4: ApiType=HTTP's event, 202 and delivered
        print("\nDEMO PASSED" if ok else "\nDEMO FAILED")
        return 0 if ok else 1


def _print_events(stack: LocalStack, ids: list[str], results: dict[str, dict]) -> bool:
    """The events of the demo's messages from GET /v1/events (issue 12: from MessagesTable's
    stream), oldest first; True when each recipient's last event is its final state."""
    want = {(r["message_id"], a): r["state"] for a, r in results.items() if "(again)" not in a}
    print("\nEvents (GET /v1/events?message_id=..., from the table's stream):")
    deadline, ok = time.monotonic() + 30, False
    while not ok and time.monotonic() < deadline:
        events = {mid: list(reversed(http(stack, "GET", f"/v1/events?message_id={mid}&limit=100")[1]["items"]))
                  for mid in ids}
        last = {(mid, e["data"]["recipient"]): e["data"]["state"] for mid in ids for e in events[mid]}
        ok = all(last.get(k) == v for k, v in want.items())
        time.sleep(0.3)
    for mid in ids:
        for e in events[mid]:
            extra = e["data"].get("attempt") or e["data"].get("bounce") or {}
            print(f"  {e['timestamp']}  {e['type']:<18} {e['data']['recipient']:<24} {e['id']}  "
                  f"{extra.get('code') or ''} {extra.get('status') or ''}".rstrip())
    return ok


def _verify_dkim(stack: LocalStack) -> str:
    """The first message the accepting MX got, checked by dkimpy and, where installed, by
    Perl's Mail::DKIM and OpenDKIM (verifiers that share no code with the signer)."""
    from .verify import dkimpy_results, have_mail_dkim, have_opendkim, mail_dkim, opendkim_results

    server = stack.mx["accept.test"].server
    if not server.received:
        return "no message received"
    raw = server.received[0].data
    host, port = stack.dns.host, stack.dns.port
    ok = all(dkimpy_results(host, port, raw))
    parts = [f"dkimpy {'pass' if ok else 'FAIL'} ({raw.count(b'DKIM-Signature:')} signatures)"]
    if have_mail_dkim():
        overall = mail_dkim(host, port, raw)[1]
        ok &= overall == "pass"
        parts.append(f"Mail::DKIM {overall}")
    if have_opendkim():
        res = {r["a"]: r["result"] for r in opendkim_results(host, port, raw)}
        ok &= set(res.values()) == {"pass"}
        parts.append("OpenDKIM " + ", ".join(f"{a}={v}" for a, v in res.items()))
    return ("pass: " if ok else "FAIL: ") + "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
