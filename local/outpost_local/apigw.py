"""`sam local start-api` without Docker: HTTP on loopback -> API Gateway REST proxy event -> handler.

The event is the shape API Gateway sends for the template's `/{proxy+}` ANY route (payload
format 1.0), and the handler's answer is turned back into HTTP the same way. Every method
goes to the handler (TRACE, PATCH, QUERY...), as ANY does, so the app's 405 with Allow is
what a client sees here and in AWS; http.server would answer an HTML 501 itself. With
`api_type="HTTP"` the event is the one an HTTP API sends instead (the template's ApiType=HTTP).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from .runtime import LocalFunction

log = logging.getLogger("outpost_local.api")
MAX_PAYLOAD = 6 * 1024 * 1024  # Lambda's synchronous invocation limit
STAGE = "prod"


def proxy_event(method: str, raw_path: str, headers: dict[str, str], body: bytes, source_ip: str) -> dict:
    url = urlsplit(raw_path)
    query = parse_qs(url.query, keep_blank_values=True)
    multi_headers: dict[str, list[str]] = {}
    for k, v in headers.items():
        multi_headers.setdefault(k, []).append(v)
    try:
        text, is_b64 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, is_b64 = base64.b64encode(body).decode(), True
    now = time.time()
    return {
        "resource": "/{proxy+}",
        "path": url.path,
        "httpMethod": method,
        "headers": dict(headers) or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": {"proxy": url.path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourceId": "local", "resourcePath": "/{proxy+}", "httpMethod": method,
            "extendedRequestId": str(uuid.uuid4()),
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "path": f"/{STAGE}{url.path}", "accountId": "123456789012", "protocol": "HTTP/1.1",
            "stage": STAGE, "domainPrefix": "localhost", "requestTimeEpoch": int(now * 1000),
            "requestId": str(uuid.uuid4()), "domainName": "localhost", "apiId": "local",
            "identity": {"sourceIp": source_ip, "userAgent": headers.get("User-Agent"),
                         "accessKey": None, "accountId": None, "caller": None, "user": None,
                         "userArn": None, "cognitoIdentityId": None, "cognitoIdentityPoolId": None,
                         "cognitoAuthenticationType": None, "cognitoAuthenticationProvider": None},
        },
        "body": text if body else None,
        "isBase64Encoded": is_b64,
    }


def http_api_event(method: str, raw_path: str, headers: dict[str, str], body: bytes, source_ip: str) -> dict:
    """The event an HTTP API sends with payload format 1.0 (the template's ApiType=HTTP; AWS's
    "Working with AWS Lambda proxy integrations for HTTP APIs"): the REST proxy event's shape with
    a `version`, header names in lower case, the `$default` stage (no stage in any path), the
    route key as `resourceId` and an empty authorizer (events/api_http_post_message.json)."""
    event = proxy_event(method, raw_path, {k.lower(): v for k, v in headers.items()}, body, source_ip)
    ctx = event["requestContext"]
    ctx.update(path=event["path"], stage="$default", resourceId="ANY /{proxy+}", domainPrefix="local",
               authorizer={"claims": None, "scopes": None}, requestId=ctx["extendedRequestId"])
    ctx["identity"].update(principalOrgId=None, userAgent=headers.get("User-Agent"))
    return {"version": "1.0", **event}


class ApiServer:
    def __init__(self, function: LocalFunction, host: str = "127.0.0.1", port: int = 3000,
                 api_type: str = "REST") -> None:
        self.function = function
        fn = function
        make_event = http_api_event if api_type == "HTTP" else proxy_event

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; without TCP_NODELAY, Nagle plus the
            # client's delayed ACK adds ~40 ms to every response.
            disable_nagle_algorithm = True

            def log_message(self, fmt: str, *args: object) -> None:
                log.debug(fmt, *args)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_PAYLOAD:
                    self._reply(413, {"Content-Type": "application/json"},
                                json.dumps({"error": {"code": "payload_too_large",
                                                      "message": "request body over 6 MB", "field": "body"}}).encode())
                    return
                body = self.rfile.read(length) if length else b""
                event = make_event(self.command, self.path, dict(self.headers.items()), body,
                                   self.client_address[0])
                try:
                    res = fn.invoke(event)
                except Exception:  # noqa: BLE001 - API Gateway answers 502 for a crashed function
                    log.exception("send API function crashed")
                    self._reply(502, {"Content-Type": "application/json"}, b'{"message": "Internal server error"}')
                    return
                headers = dict(res.get("headers") or {})
                for k, vs in (res.get("multiValueHeaders") or {}).items():
                    headers[k] = ", ".join(vs)
                raw = res.get("body") or ""
                data = base64.b64decode(raw) if res.get("isBase64Encoded") else raw.encode()
                self._reply(int(res.get("statusCode", 200)), headers, data)

            def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":  # RFC 9110 §9.3.2: no content in a HEAD response
                    self.wfile.write(data)

            def __getattr__(self, name: str) -> object:
                # http.server dispatches to do_<METHOD>; every method is the handler's business.
                if name.startswith("do_"):
                    return self._handle
                raise AttributeError(name)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="api", daemon=True)

    @property
    def url(self) -> str:
        host = self.host.decode() if isinstance(self.host, bytes) else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
