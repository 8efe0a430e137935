"""A real authoritative DNS server on loopback (UDP and TCP on one port), scriptable from tests.

Records live in memory and can change while the server runs. Answers follow what a real
authoritative server does, because the sender's MX logic is tested against it:

* names are case-insensitive (RFC 4343) and the question is echoed with its original case;
* a name that exists with other types (or has names below it: an "empty non-terminal",
  RFC 8020) answers NOERROR with an empty answer section (NODATA); an unknown name answers
  NXDOMAIN; both carry the AA bit;
* a CNAME is returned (and followed inside this server's data) for other types (RFC 1034 §3.6.2);
* UDP replies larger than 512 bytes, or than the client's EDNS buffer (RFC 6891 §6.2.5), are
  truncated with TC=1 so the client retries over TCP (RFC 7766 §5);
* `set_servfail` answers SERVFAIL and `set_timeout` never answers, for failure-path tests.
"""

from __future__ import annotations

import ipaddress
import os
import selectors
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any

from dnslib import AAAA, CNAME, EDNS0, MX, PTR, QTYPE, RCODE, RR, TXT, A, DNSHeader, DNSRecord

from .lifecycle import Server

__all__ = ["DnsServer", "Query"]

_RDATA_TYPES = {"A", "AAAA", "MX", "TXT", "CNAME", "PTR"}
_PLAIN_UDP_LIMIT = 512  # RFC 1035 §4.2.1, without EDNS
_MAX_CNAME_CHAIN = 8


@dataclass(frozen=True)
class Query:
    """One question the server received (for assertions such as "fell back to TCP")."""

    name: str
    rtype: str
    transport: str  # "udp" or "tcp"


@dataclass(frozen=True)
class _Record:
    rtype: str
    rdata: Any
    ttl: int


def _normalise(name: str) -> str:
    name = name.strip().lower().rstrip(".")
    return name + "." if name else "."


def _owner_name(name: str, rtype: str) -> str:
    # Convenience: add("127.0.0.5", "PTR", "mx.test") means the reverse name of that address.
    if rtype == "PTR":
        try:
            return _normalise(ipaddress.ip_address(name).reverse_pointer)
        except ValueError:
            pass
    return _normalise(name)


def _txt_chunks(value: str | bytes | tuple[str | bytes, ...] | list[str | bytes]) -> list[bytes]:
    # A TXT record is a sequence of <character-string>s of at most 255 octets each
    # (RFC 1035 §3.3.14); DKIM keys are longer and are split (RFC 6376 §3.6.2.2).
    parts = [value] if isinstance(value, str | bytes) else list(value)
    chunks: list[bytes] = []
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        if not raw:
            chunks.append(b"")
        for i in range(0, len(raw), 255):
            chunks.append(raw[i : i + 255])
    return chunks


def _make_rdata(rtype: str, value: Any) -> Any:
    if rtype == "A":
        return A(str(ipaddress.IPv4Address(value)))
    if rtype == "AAAA":
        return AAAA(str(ipaddress.IPv6Address(value)))
    if rtype == "MX":
        pref, host = value
        # Null MX (RFC 7505): preference 0 and the root label ".".
        return MX(_normalise(host), int(pref))
    if rtype == "TXT":
        return TXT(_txt_chunks(value))
    if rtype == "CNAME":
        return CNAME(_normalise(value))
    if rtype == "PTR":
        return PTR(_normalise(value))
    raise ValueError(f"unsupported record type {rtype!r}; use one of {sorted(_RDATA_TYPES)}")


class DnsServer(Server):
    """Authoritative DNS for any names you add, on `host:port` over both UDP and TCP."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.queries: list[Query] = []
        self._records: dict[str, list[_Record]] = {}
        self._servfail: set[str] = set()
        self._timeout: set[str] = set()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._wake_r = self._wake_w = -1
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()

    # -- data --------------------------------------------------------------------------------

    def add(self, name: str, rtype: str, value: Any, ttl: int = 60) -> None:
        """Add one record. MX value: (preference, host) with host "." for a null MX; TXT
        value: a string (split into 255-byte chunks) or a sequence of strings."""
        rtype = rtype.upper()
        record = _Record(rtype, _make_rdata(rtype, value), int(ttl))
        with self._lock:
            self._records.setdefault(_owner_name(name, rtype), []).append(record)

    def remove(self, name: str, rtype: str | None = None) -> None:
        """Remove all records of `rtype` at `name` (all types when rtype is None)."""
        with self._lock:
            key = _owner_name(name, (rtype or "").upper())
            if rtype is None:
                self._records.pop(key, None)
                return
            kept = [r for r in self._records.get(key, []) if r.rtype != rtype.upper()]
            if kept:
                self._records[key] = kept
            else:
                self._records.pop(key, None)

    def set_servfail(self, name: str, on: bool = True) -> None:
        with self._lock:
            (self._servfail.add if on else self._servfail.discard)(_normalise(name))

    def set_timeout(self, name: str, on: bool = True) -> None:
        with self._lock:
            (self._timeout.add if on else self._timeout.discard)(_normalise(name))

    @property
    def address(self) -> str:
        """"host:port", the format of OUTPOST_DNS_SERVERS."""
        return f"{self.host}:{self.port}"

    def resolver(self, timeout: float = 2.0) -> Any:
        """A dnspython Resolver that asks only this server (for tests and the local stack)."""
        import dns.resolver

        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [self.host]
        r.port = self.port
        r.lifetime = timeout
        r.timeout = timeout
        r.cache = None
        return r

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> DnsServer:
        if self._udp is not None:
            raise RuntimeError("DnsServer already started")
        self._stop.clear()
        self._bind()
        self._wake_r, self._wake_w = os.pipe()
        loop = threading.Thread(target=self._serve, name=f"dns-{self.address}", daemon=True)
        self._threads = [loop]
        loop.start()
        return self

    def stop(self) -> None:
        if self._udp is None:
            return
        self._stop.set()
        os.write(self._wake_w, b"x")
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in list(self._threads):
            t.join(timeout=5)
        for s in (self._udp, self._tcp):
            if s is not None:
                s.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._udp = self._tcp = None
        self._threads = []

    def _bind(self) -> None:
        # UDP first, then TCP on the same number; with port 0 the TCP port may be taken by
        # someone else, so retry with a fresh UDP port.
        last_error: OSError | None = None
        for _ in range(20):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((self.host, self.port))
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
            except OSError as error:
                udp.close()
                tcp.close()
                last_error = error
                if self.port:
                    raise
                continue
            tcp.listen(16)
            self._udp, self._tcp, self.port = udp, tcp, port
            return
        raise OSError(f"could not bind UDP+TCP on {self.host}") from last_error

    # -- serving -----------------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._udp is not None and self._tcp is not None
        sel = selectors.DefaultSelector()
        sel.register(self._udp, selectors.EVENT_READ, "udp")
        sel.register(self._tcp, selectors.EVENT_READ, "tcp")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stop.is_set():
                for key, _ in sel.select():
                    if key.data == "wake":
                        return
                    if key.data == "udp":
                        self._serve_udp_datagram()
                    else:
                        self._accept_tcp()
        finally:
            sel.close()

    def _serve_udp_datagram(self) -> None:
        assert self._udp is not None
        try:
            data, peer = self._udp.recvfrom(65535)
        except OSError:
            return
        reply = self._answer(data, "udp")
        if reply is not None:
            self._udp.sendto(reply, peer)

    def _accept_tcp(self) -> None:
        assert self._tcp is not None
        try:
            conn, _ = self._tcp.accept()
        except OSError:
            return
        with self._lock:
            self._conns.add(conn)
        t = threading.Thread(target=self._serve_tcp, args=(conn,), daemon=True)
        self._threads.append(t)
        t.start()

    def _serve_tcp(self, conn: socket.socket) -> None:
        # RFC 1035 §4.2.2 / RFC 7766 §8: two-byte length prefix, several queries per connection.
        try:
            conn.settimeout(30)
            while not self._stop.is_set():
                header = _recv_exact(conn, 2)
                if header is None:
                    return
                (length,) = struct.unpack("!H", header)
                data = _recv_exact(conn, length)
                if data is None:
                    return
                reply = self._answer(data, "tcp")
                if reply is not None:
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _answer(self, data: bytes, transport: str) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return None  # not DNS: drop, as a real server would
        if not request.questions:
            return None
        question = request.q
        qname = _normalise(str(question.qname))
        qtype = QTYPE.get(question.qtype)
        self.queries.append(Query(qname, str(qtype), transport))

        reply = DNSRecord(
            DNSHeader(id=request.header.id, qr=1, aa=1, ra=0, rd=request.header.rd),
            q=question,
        )
        edns = next((rr for rr in request.ar if rr.rtype == QTYPE.OPT), None)
        with self._lock:
            if qname in self._timeout:
                return None
            if qname in self._servfail:
                reply.header.rcode = RCODE.SERVFAIL
            else:
                self._fill(reply, qname, str(qtype))
        if edns is not None:
            reply.add_ar(EDNS0(udp_len=1232))
        packed: bytes = reply.pack()
        if transport == "udp":
            limit = max(_PLAIN_UDP_LIMIT, edns.rclass) if edns is not None else _PLAIN_UDP_LIMIT
            if len(packed) > limit:
                reply.rr, reply.auth = [], []
                reply.ar = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
                reply.header.tc = 1
                packed = reply.pack()
        return packed

    def _fill(self, reply: DNSRecord, qname: str, qtype: str) -> None:
        name = qname
        for _ in range(_MAX_CNAME_CHAIN):
            records = self._records.get(name)
            if records is None:
                if name == qname and not self._has_descendant(name):
                    reply.header.rcode = RCODE.NXDOMAIN
                return
            matching = [r for r in records if qtype in ("ANY", r.rtype)]
            if matching:
                for r in matching:
                    reply.add_answer(RR(name, getattr(QTYPE, r.rtype), rdata=r.rdata, ttl=r.ttl))
                return
            cname = next((r for r in records if r.rtype == "CNAME"), None)
            if cname is None:
                return  # NODATA
            reply.add_answer(RR(name, QTYPE.CNAME, rdata=cname.rdata, ttl=cname.ttl))
            name = _normalise(str(cname.rdata.label))
            if name in self._servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return

    def _has_descendant(self, name: str) -> bool:
        suffix = "." + name if name != "." else "."
        return any(other.endswith(suffix) for other in self._records)


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf
