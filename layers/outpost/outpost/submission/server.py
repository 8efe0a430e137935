"""The submission server: aiosmtpd sessions on two listeners, 587-like (STARTTLS) and
465-like (implicit TLS, RFC 8314), in front of SendService.send_raw.

A session: EHLO (SIZE, 8BITMIME, SMTPUTF8, PIPELINING, ENHANCEDSTATUSCODES, STARTTLS before
TLS, AUTH PLAIN LOGIN after it); AUTH with an API key of scope `send` as the password (any
user name); MAIL, RCPT (at most `max_recipients`), DATA (at most `max_message_bytes`: what is
past it is read and dropped, then 552 5.3.4); the message is accepted by the same service as
`POST /v1/messages`, and the reply names its Outpost id. Nothing is accepted without AUTH, and
no AUTH without TLS: never an open relay. Each DATA re-checks the key (revoked within the key
cache's 30 s; the per-key rate limit: 451 4.7.1).

Pipelining (RFC 2920) needs nothing more: commands are read from one stream in order and each
reply is written before the next command is read. Blocking work (the key lookup, the store
and the queue: boto3) runs in a thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import logging
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax

from ..addresses import AddressError, parse_address
from ..api.auth import Principal
from ..errors import ForbiddenError, ThrottledError, UnauthorizedError
from ..raw_message import bare_line_end
from . import replies
from .drain import Sessions
from .guard import ByteBudget, ClientGuard
from .settings import SubmissionSettings

__all__ = ["SubmissionServer"]

log = logging.getLogger("outpost.submission")
IN_PROGRESS_SECONDS = 120  # an accept that died mid-way (the process killed) frees its Message-ID after this


class Submitter(Protocol):
    """api.service.SendService, as the server uses it."""

    def send_raw(self, data: bytes, *, rcpts: list[str], principal: Principal,
                 context: Any = None) -> tuple[dict, bool]: ...


class Keys(Protocol):
    """api.auth.KeyRing, as the server uses it."""

    def authenticate(self, authorization: str | None, scope: str) -> Principal: ...


class _AcceptDeadline:
    """What Powertools asks of a Lambda context: an in-progress idempotency record expires
    after IN_PROGRESS_SECONDS instead of blocking the Message-ID for its whole 24 h."""

    def get_remaining_time_in_millis(self) -> int:
        return IN_PROGRESS_SECONDS * 1000


class _Hooks:
    """aiosmtpd's handler: EHLO's extensions, RCPT's bounds, DATA's acceptance."""

    def __init__(self, server: SubmissionServer) -> None:
        self.server = server

    async def handle_EHLO(self, smtp: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_RCPT(self, smtp: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.server.settings.max_recipients:
            return replies.TOO_MANY_RECIPIENTS
        try:
            parse_address(address, allow_name=False)
        except AddressError as exc:
            return f"553 5.1.3 Invalid recipient address: {exc}"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        key = session.auth_data
        data = envelope.original_content
        assert isinstance(key, str) and isinstance(data, bytes)  # AUTH and DATA came first
        if bare_line_end(data):  # SMTP smuggling (raw_message.bare_line_end): Postfix's 5.5.2
            return replies.BARE_LINE_END
        try:
            principal = await self.server.blocking(self.server.keys.authenticate, f"Bearer {key}", "send")
            out, _ = await self.server.blocking(lambda: self.server.sender.send_raw(
                data, rcpts=list(envelope.rcpt_tos), principal=principal, context=_AcceptDeadline()))
        except Exception as exc:  # noqa: BLE001 - every error becomes a reply (replies.py)
            reply = replies.reply_for(exc)
            if reply.startswith("451 4.3.0"):
                log.exception("submission failed", extra={"peer": str(session.peer)})
            return reply
        return replies.queued(out["id"])


class _SubmissionSmtp(SMTP):
    """aiosmtpd's session with Outpost's AUTH (the key check off the loop, the lockout),
    connection bounds, a whole-session timeout and enhanced codes on every reply."""

    def __init__(self, server: SubmissionServer, *, implicit_tls: bool, **kwargs: Any) -> None:
        super().__init__(_Hooks(server), **kwargs)
        self.server, self.implicit_tls = server, implicit_tls
        # On the implicit-TLS listener the whole session is TLS: EHLO offers AUTH at once (set
        # here, not passed: aiosmtpd warns of auth_require_tls=False, which it cannot see is safe).
        self._auth_require_tls = not implicit_tls
        self._ip = "?"
        self._admitted = False
        self._lifetime: asyncio.TimerHandle | None = None
        self._busy = False
        self._smtp_methods = {name: self._drained(m) for name, m in self._smtp_methods.items()}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None and self.transport is None:  # not the STARTTLS re-entry
            peer = transport.get_extra_info("peername")
            self._ip = str(peer[0]) if peer else "?"
            self._admitted = self.server.guard.connect(self._ip)
            self._lifetime = self.loop.call_later(self.server.settings.session_timeout, transport.close)
            self.server.sessions.add(self)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        # A deadline per line, as Postfix's smtpd_per_record_deadline: aiosmtpd restarts its
        # timer per command, and here each complete line restarts it as well, so a 40 MB DATA
        # on a slow link is not idle while a client trickling one byte at a time (slowloris)
        # still has idle_timeout to finish each line. session_timeout caps it all.
        if b"\n" in data:
            self._reset_timeout()
        super().data_received(data)

    def connection_lost(self, error: Exception | None) -> None:
        if self._admitted:
            self._admitted = False
            self.server.guard.disconnect(self._ip)
        if self._lifetime is not None:
            self._lifetime.cancel()
        self.server.sessions.remove(self)
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        if not self._admitted:
            await self.push(replies.TOO_MANY_CONNECTIONS)
            assert self.transport is not None
            self.transport.close()
            return
        if self.server.sessions.draining:  # accepted just before the listeners closed
            self.server.sessions.hang_up(self)
            return
        await super()._handle_client()

    # ---- graceful stop (drain.py) ---------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._busy

    def say_goodbye(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._writer.write(replies.SHUTTING_DOWN.encode() + b"\r\n")
            self.transport.close()

    def abort(self) -> None:
        for transport in (self.transport, self._original_transport):
            if transport is not None:
                transport.abort()  # type: ignore[attr-defined]

    def _drained(self, method: Any) -> Any:
        """A command, while the server drains: refused with 421 4.3.2 if it comes after the drain
        began; if it was under way then (DATA above all), finished first, then the 421."""
        @functools.wraps(method)
        async def command(arg: str | None) -> None:
            if self.server.sessions.draining:
                self.server.sessions.hang_up(self)
                return
            self._busy = True
            try:
                await method(arg)
            finally:
                self._busy = False
            if self.server.sessions.draining:
                self.server.sessions.hang_up(self)
        return command

    async def push(self, status: Any) -> None:
        if isinstance(status, str) and status[3:4] == " " and not status.startswith(
                ("220 " + self.hostname, "250 " + self.hostname, "250 HELP", "334 ")):
            status = replies.enhance(status)  # not the greeting's, HELO's or EHLO's (RFC 2034 §3)
        await super().push(status)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        """aiosmtpd's DATA within a reservation of the process's ByteBudget: the declared SIZE
        (RFC 1870) plus slack, or max_message_bytes; the reservation is also this DATA's limit
        (past it: 552 5.3.4), so a client cannot declare little and send much."""
        assert self.session is not None and self.envelope is not None
        if arg or not self.session.authenticated or not self.envelope.rcpt_tos:
            await super().smtp_DATA(arg)  # aiosmtpd's own refusals (501, 530, 503)
            return
        reserve = _reservation(self.envelope.mail_options, self.server.settings.max_message_bytes)
        # The key (hashed: no second copy of it): one key's slow DATAs hold a share at most.
        owner = hashlib.sha256(str(self.session.auth_data).encode()).hexdigest()
        if not self.server.budget.take(reserve, owner):
            await self.push(replies.BUSY)
            return
        limit, self.data_size_limit = self.data_size_limit, reserve
        try:
            await super().smtp_DATA(arg)
        finally:
            self.data_size_limit = limit
            self.server.budget.give(reserve, owner)

    async def smtp_STARTTLS(self, arg: str) -> None:
        """RFC 3207 §4: no STARTTLS inside TLS (aiosmtpd would answer 220 and nest a second
        TLS layer in the first); Postfix's reply."""
        if self._tls_protocol is not None:
            await self.push("554 5.5.1 Error: TLS already active")
            return
        await super().smtp_STARTTLS(arg)

    @syntax("AUTH <mechanism> [initial-response]")
    async def smtp_AUTH(self, arg: str | None) -> None:
        """RFC 4954, PLAIN (RFC 4616) and LOGIN, only over TLS; the password is the API key."""
        assert self.session is not None
        if await self.check_helo_needed("EHLO"):
            return
        if not (self.implicit_tls or self._tls_protocol is not None):
            await self.push(replies.NEED_TLS)
        elif self.session.authenticated:
            await self.push("503 5.5.1 Already authenticated")
        elif self.server.guard.locked(self._ip):
            await self.push(replies.AUTH_LOCKED)
        else:
            mechanism, _, initial = (arg or "").strip().partition(" ")
            password = await self._password(mechanism.upper(), initial.strip())
            if password is not None:
                await self.push(await self._check_key(password))

    async def _check_key(self, password: str) -> str:
        assert self.session is not None
        try:
            await self.server.blocking(self.server.keys.authenticate, f"Bearer {password}", "send")
        except (UnauthorizedError, ForbiddenError):  # unknown, revoked, or no `send` scope
            if self.server.guard.failed(self._ip):
                log.warning("AUTH lockout", extra={"client_ip": self._ip})
            return replies.BAD_CREDENTIALS
        except ThrottledError:
            return replies.AUTH_UNAVAILABLE
        except Exception:  # noqa: BLE001 - the key store failed: the client may retry
            log.exception("AUTH failed", extra={"client_ip": self._ip})
            return replies.AUTH_UNAVAILABLE
        self.session.authenticated = True
        self.session.auth_data = password  # type: ignore[assignment]  # aiosmtpd types it None
        return replies.AUTH_OK

    async def _password(self, mechanism: str, initial: str) -> str | None:
        """The password the client sent, or None once a reply has been sent."""
        if mechanism not in ("PLAIN", "LOGIN"):
            await self.push("504 5.5.4 Unrecognized authentication type")
            return None
        if mechanism == "PLAIN":
            blob = await self._response(initial, "")
            parts = blob.split(b"\0") if blob is not None else []
            if blob is not None and len(parts) != 3:
                await self.push("501 5.5.2 AUTH PLAIN takes authzid NUL authcid NUL password")
            return parts[2].decode("utf-8", "replace") if len(parts) == 3 else None
        user = await self._response(initial, "Username:")  # RFC 4954 has no LOGIN; this is its custom
        if user is None:
            return None
        blob = await self._response("", "Password:")
        return blob.decode("utf-8", "replace") if blob is not None else None

    async def _response(self, initial: str, challenge: str) -> bytes | None:
        if initial == "=":
            return b""  # RFC 4954 §4: an empty initial response
        if initial:
            try:
                return base64.b64decode(initial, validate=True)
            except binascii.Error:
                await self.push("501 5.5.2 Cannot decode base64")
                return None
        try:
            got = await self.challenge_auth(challenge)
        except ValueError as exc:  # asyncio's stream limit: aiosmtpd would log a traceback and echo it
            if "not found" in str(exc):  # the rest of the line is still to come: not a command
                await self._discard_line()
            await self.push(replies.AUTH_LINE_TOO_LONG)
            return None
        return None if got is MISSING else bytes(got)  # type: ignore[arg-type]

    async def _discard_line(self) -> None:
        """Read and drop up to the next LF, a buffer's worth at a time (as aiosmtpd's DATA does)."""
        while True:
            try:
                await self._reader.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as exc:
                await self._reader.read(exc.consumed)
            except asyncio.IncompleteReadError:
                return


def _reservation(mail_options: list[str], most: int) -> int:
    """What a DATA may bring: MAIL's SIZE= plus 1/16 and 64 KiB (dot-stuffing, estimates)."""
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return min(most, int(value) + int(value) // 16 + 65536)
    return most


class SubmissionServer:
    """Both listeners on one event loop. `ports` holds the bound ports once started (a port
    of 0 in the settings takes a free one: tests)."""

    def __init__(self, settings: SubmissionSettings, *, sender: Submitter, keys: Keys,
                 tls_context: ssl.SSLContext, guard: ClientGuard | None = None) -> None:
        self.settings, self.sender, self.keys, self.tls = settings, sender, keys, tls_context
        self.guard = guard or ClientGuard(settings)
        self.budget = ByteBudget(settings.data_budget, settings.data_budget_share)
        self.sessions = Sessions()
        self.ports: dict[str, int] = {}
        self._pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="submission")
        self._servers: list[asyncio.base_events.Server] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def blocking(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _session(self, loop: asyncio.AbstractEventLoop, implicit_tls: bool) -> _SubmissionSmtp:
        s = self.settings
        return _SubmissionSmtp(
            self, implicit_tls=implicit_tls, loop=loop, hostname=s.hostname, ident="Outpost submission",
            data_size_limit=s.max_message_bytes, enable_SMTPUTF8=True, decode_data=False,
            tls_context=None if implicit_tls else self.tls, require_starttls=not implicit_tls,
            auth_required=True, auth_require_tls=True, timeout=s.idle_timeout)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        s = self.settings
        for name, port, implicit in (("starttls", s.starttls_port, False), ("tls", s.tls_port, True)):
            server = await loop.create_server(lambda implicit=implicit: self._session(loop, implicit),  # type: ignore[misc]
                                              s.host, port, ssl=self.tls if implicit else None,
                                              reuse_address=True)
            self._servers.append(server)
            self.ports[name] = server.sockets[0].getsockname()[1]
        log.info("submission listening", extra={"host": s.host, **self.ports})

    async def close(self, drain: float | None = None) -> None:
        """Stop accepting at once, then drain the open sessions (drain.py) for at most `drain`
        seconds (default: the drain_seconds setting)."""
        for server in self._servers:
            server.close()
        seconds = self.settings.drain_seconds if drain is None else drain
        log.info("submission draining", extra={"sessions": len(self.sessions), "drain_seconds": seconds})
        cut = await self.sessions.drain(seconds)
        for server in self._servers:  # on 3.12 it waits for connections still in a TLS handshake
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), self.sessions.grace)
        log.info("submission stopped", extra={"sessions_cut": cut})
        self._servers.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- in a thread (the local stack) ----------------------------------------------------
    def start_in_thread(self, timeout: float = 10.0) -> SubmissionServer:
        loop = self._loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            started.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="outpost-submission", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise TimeoutError("the submission server did not start")
        return self

    def stop(self, drain: float = 0.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.close(drain), loop).result(timeout=drain + 15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = None
