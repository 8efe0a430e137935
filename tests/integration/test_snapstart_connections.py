"""SnapStart restore drops a boto3 client's open connections and cached credentials
(bootstrap.forget_connections, run by bootstrap.forget_snapshot_state after every restore).

A real HTTP server on loopback counts the TCP connections a real boto3 client opens: calls made
before the hook share one kept-alive connection (as init's calls would be shared by every copy
restored from the snapshot), the first call after it opens a new one. The client's credentials
are refreshable ones (what SnapStart's container credentials provider gives); after the hook
the next call fetches new ones, and signs with them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.credentials import RefreshableCredentials

from outpost import bootstrap, snapstart


class _Counting(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections: set[tuple[str, int]] = set()
        self.key_ids: list[str] = []


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as AWS endpoints do
    server: _Counting

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.connections.add(self.client_address)
        auth = self.headers.get("Authorization", "")
        self.server.key_ids.append(auth.split("Credential=")[1].split("/")[0] if "Credential=" in auth else "")
        body = b'{"TableNames": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[_Counting]:
    server = _Counting()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_restore_closes_pooled_connections_and_refreshes_credentials(endpoint: _Counting) -> None:
    fetched: list[str] = []

    def fetch() -> dict[str, str]:  # the container credentials endpoint's answer, one per call
        fetched.append(f"AKIDCOPY{len(fetched)}")
        expiry = datetime.now(UTC) + timedelta(hours=6)
        return {"access_key": fetched[-1], "secret_key": "s", "token": "t", "expiry_time": expiry.isoformat()}

    creds = RefreshableCredentials.create_from_metadata(fetch(), fetch, "container-role")
    session = boto3.session.Session(region_name="us-east-1")
    session._session._credentials = creds  # noqa: SLF001 - as the container provider would set them
    client = session.client("dynamodb", endpoint_url=f"http://127.0.0.1:{endpoint.server_address[1]}")
    bootstrap._clients.add(client)  # noqa: SLF001 - as aws() registers the clients it builds

    client.list_tables()
    client.list_tables()  # init's calls: one kept-alive connection, in the snapshot
    assert len(endpoint.connections) == 1 and endpoint.key_ids == ["AKIDCOPY0"] * 2

    snapstart.restore()  # the runtime's after-restore hooks
    client.list_tables()
    client.list_tables()
    # A new connection of this copy's own, kept alive again, and the credentials fetched anew.
    assert len(endpoint.connections) == 2
    assert fetched == ["AKIDCOPY0", "AKIDCOPY1"]
    assert endpoint.key_ids[2:] == ["AKIDCOPY1"] * 2


def test_without_the_hook_the_connection_and_credentials_are_kept(endpoint: _Counting) -> None:
    # The control: the same calls with no restore reuse init's connection and credentials.
    fetched: list[int] = []

    def fetch() -> dict[str, str]:
        fetched.append(1)
        expiry = datetime.now(UTC) + timedelta(hours=6)
        return {"access_key": "AKIDINIT", "secret_key": "s", "token": "t", "expiry_time": expiry.isoformat()}

    session = boto3.session.Session(region_name="us-east-1")
    session._session._credentials = RefreshableCredentials.create_from_metadata(fetch(), fetch, "c")  # noqa: SLF001
    client = session.client("dynamodb", endpoint_url=f"http://127.0.0.1:{endpoint.server_address[1]}")
    for _ in range(4):
        client.list_tables()
    assert len(endpoint.connections) == 1 and fetched == [1]
