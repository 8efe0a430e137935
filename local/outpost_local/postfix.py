"""A private, real Postfix instance on loopback: an MX for one domain, and/or a relay that
turns a next hop's 5xx into a real Postfix DSN.

Nothing touches the system's default instance: the instance gets its own config directory,
queue, data directory, mailboxes and log file (all in a fresh directory under the system temp
dir, because Postfix's unprivileged daemons must be able to traverse the path, and pytest's
tmp dirs are 0700). `postfix -c DIR start|stop` drives it; `stop` also kills the master if it
lingers. The Postfix master must run as root, so non-root callers get `PostfixUnavailable`
(tests skip). `workdir` receives a copy of the log and the mailboxes when the instance stops.

Routing, in Postfix's own terms:
* `domain` + `known_users` -> virtual_mailbox_domains / virtual_mailbox_maps (Maildirs);
  unknown users are refused at RCPT with 550 5.1.1 (smtpd_reject_unlisted_recipient).
* `capture_domains` -> catch-all mailboxes ("@domain"), e.g. the return-path domain, so the
  DSNs Postfix generates are captured as files (`delivered()`).
* `routes` -> transport_maps "domain smtp:[host]:port" (e.g. return path -> a local MxServer).
* `relay_to` -> relayhost [host]:port for everything else; with `relay_auth`, over verified
  TLS (the certificate must match `relay_cert_match`: a name, or Postfix's `nexthop`) with SASL
  PLAIN/LOGIN (Cyrus SASL's modules).
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from .lifecycle import Server, wait_port

__all__ = ["POSTFIX", "PostfixInstance", "PostfixUnavailable", "postfix_available"]

POSTFIX = "/usr/sbin/postfix"
_DAEMON_DIR = "/usr/lib/postfix/sbin"

# One line per service; chroot is "n" everywhere because the private queue directory holds
# none of the files (resolv.conf, certs, maps) a chroot jail would need.
_MASTER_CF = """\
{host}:{port} inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n - 0 cleanup
qmgr       unix  n - n 300 1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n - - trivial-rewrite
bounce     unix  - - n - 0 bounce
defer      unix  - - n - 0 bounce
trace      unix  - - n - 0 bounce
verify     unix  - - n - 1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n - - proxymap
proxywrite unix  - - n - 1 proxymap
smtp       unix  - - n - - smtp
relay      unix  - - n - - smtp
showq      unix  n - n - - showq
error      unix  - - n - - error
retry      unix  - - n - - error
discard    unix  - - n - - discard
local      unix  - n n - - local
virtual    unix  - n n - - virtual
lmtp       unix  - - n - - lmtp
anvil      unix  - - n - 1 anvil
scache     unix  - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
"""


class PostfixUnavailable(RuntimeError):
    """Postfix is not installed, or we are not root (the master daemon requires root)."""


def postfix_available() -> str | None:
    """None when a private Postfix can run here, else the reason it cannot."""
    if not Path(POSTFIX).exists() or not Path(_DAEMON_DIR, "master").exists():
        return f"{POSTFIX} is not installed"
    if os.geteuid() != 0:
        return "Postfix's master daemon must run as root"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "the 'postfix' user does not exist"
    return None


class PostfixInstance(Server):
    """A private Postfix listening on host:port only; see the module docstring for routing."""

    def __init__(
        self,
        workdir: Path,
        host: str,
        port: int,
        domain: str,
        known_users: set[str],
        cert: tuple[Path, Path] | None,
        hostname: str = "postfix.test",
        *,
        relay_to: tuple[str, int] | None = None,
        routes: Mapping[str, tuple[str, int]] | None = None,
        capture_domains: Iterable[str] = (),
        ca_file: Path | None = None,
        mynetworks: str | None = None,
        relay_auth: tuple[str, str] | None = None,
        relay_cert_match: str = "nexthop",
    ) -> None:
        self.workdir = Path(workdir)
        self.host = host
        self.port = port
        self.domain = domain.lower()
        self.known_users = {u.lower() for u in known_users}
        self.cert = cert
        self.hostname = hostname
        self.relay_to = relay_to
        self.routes = dict(routes or {})
        self.capture_domains = [d.lower() for d in capture_domains]
        self.ca_file = ca_file
        # A relay must accept mail from local clients for any domain; a plain MX only for its
        # own domains (so relaying to elsewhere is refused like on a real MX).
        self.mynetworks = mynetworks or ("127.0.0.0/8" if relay_to else f"{host}/32")
        # (user, password) for relayhost with SASL over verified TLS (a submission service's
        # AUTH: Outpost's, issue 13); needs ca_file.
        self.relay_auth, self.relay_cert_match = relay_auth, relay_cert_match
        self.root: Path | None = None

    # -- paths ------------------------------------------------------------------------------

    @property
    def config_dir(self) -> Path:
        assert self.root is not None
        return self.root / "etc"

    @property
    def log_file(self) -> Path:
        """The instance's maillog (live while running, then the copy in workdir)."""
        if self.root is not None:
            return self.root / "log" / "postfix.log"
        return self.workdir / "postfix.log"

    def _mail_dir(self) -> Path:
        return self.root / "mail" if self.root is not None else self.workdir / "mail"

    # -- configuration ----------------------------------------------------------------------

    def _main_cf(self, uid: int, gid: int) -> str:
        assert self.root is not None
        r = self.root
        domains = [self.domain, *self.capture_domains]
        lines = {
            "compatibility_level": "3.6",
            "queue_directory": f"{r}/spool",
            "data_directory": f"{r}/data",
            "meta_directory": "/etc/postfix",
            "command_directory": "/usr/sbin",
            "daemon_directory": _DAEMON_DIR,
            "shlib_directory": "/usr/lib/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "maillog_file": f"{r}/log/postfix.log",
            "maillog_file_prefixes": str(r),
            "syslog_name": "postfix-outpost",
            "myhostname": self.hostname,
            "mydomain": self.hostname.partition(".")[2] or self.hostname,
            "myorigin": "$myhostname",
            "mydestination": "",
            # Postfix insists inet_interfaces be an address configured on an interface, and
            # 127.0.0.x (x != 1) is only routed, not configured; master.cf names host:port.
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": self.mynetworks,
            "smtpd_banner": "$myhostname ESMTP Postfix",
            "smtpd_peername_lookup": "no",  # no reverse DNS: there is no DNS on loopback
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_reject_unlisted_recipient": "yes",
            "unknown_virtual_mailbox_reject_code": "550",
            "virtual_mailbox_domains": ", ".join(domains),
            "virtual_mailbox_base": f"{r}/mail",
            "virtual_mailbox_maps": f"texthash:{r}/etc/vmailbox",
            "virtual_uid_maps": f"static:{uid}",
            "virtual_gid_maps": f"static:{gid}",
            "virtual_minimum_uid": "1",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            "smtputf8_enable": "yes",
            # Short timers: tests wait for bounces, not for production retry schedules.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "smtp_connect_timeout": "5s",
            "delay_warning_time": "0h",
            "smtp_tls_security_level": "may",
            "smtp_tls_loglevel": "1",
            "smtpd_tls_loglevel": "1",
            "smtp_dns_support_level": "disabled" if self.relay_to or self.routes else "",
        }
        if self.cert is not None:
            cert_file, key_file = self.cert
            lines["smtpd_tls_security_level"] = "may"
            lines["smtpd_tls_chain_files"] = f"{key_file}, {cert_file}"
        if self.ca_file is not None:
            lines["smtp_tls_CAfile"] = str(self.ca_file)
        if self.relay_to is not None:
            lines["relayhost"] = f"[{self.relay_to[0]}]:{self.relay_to[1]}"
        if self.routes:
            lines["transport_maps"] = f"texthash:{r}/etc/transport"
        if self.relay_auth is not None:
            lines.update({"smtp_sasl_auth_enable": "yes", "smtp_sasl_security_options": "noanonymous",
                          "smtp_sasl_password_maps": f"texthash:{r}/etc/sasl_passwd",
                          "smtp_tls_security_level": "secure", "smtp_tls_secure_cert_match": self.relay_cert_match})
        return "".join(f"{k} = {v}\n" for k, v in lines.items())

    def _write_config(self) -> None:
        assert self.root is not None
        postfix_pw = pwd.getpwnam("postfix")
        uid, gid = postfix_pw.pw_uid, postfix_pw.pw_gid
        etc = self.config_dir
        for sub in ("etc", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("data", "mail"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
            os.chown(self.root / sub, uid, gid)
        (etc / "main.cf").write_text(self._main_cf(uid, gid))
        (etc / "master.cf").write_text(_MASTER_CF.format(host=self.host, port=self.port))
        # Maildir paths end in "/" (virtual(8)); "@domain" is a catch-all.
        vmailbox = [f"{u}@{self.domain} {self.domain}/{u}/\n" for u in sorted(self.known_users)]
        vmailbox += [f"@{d} {d}/catchall/\n" for d in self.capture_domains]
        (etc / "vmailbox").write_text("".join(vmailbox))
        transport = [f"{d} smtp:[{h}]:{p}\n" for d, (h, p) in self.routes.items()]
        (etc / "transport").write_text("".join(transport))
        if self.relay_auth is not None and self.relay_to is not None:
            host, port = self.relay_to
            user, password = self.relay_auth
            (etc / "sasl_passwd").write_text(f"[{host}]:{port} {user}:{password}\n")
            (etc / "sasl_passwd").chmod(0o600)

    # -- lifecycle --------------------------------------------------------------------------

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "MAIL_CONFIG": str(self.config_dir)}
        proc = subprocess.run(
            [POSTFIX, "-c", str(self.config_dir), *args],
            capture_output=True, text=True, env=env, timeout=60,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"postfix {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
                f"{self._diagnose()}\n--- log ---\n{self._log_tail()}"
            )
        return proc

    def _diagnose(self) -> str:
        # `postfix` prints its fatal errors to stderr only when stderr is a terminal (otherwise
        # to syslog, which may not exist here), so ask `postfix check` again under a pty.
        if shutil.which("script") is None:
            return ""
        proc = subprocess.run(
            ["script", "-qec", f"{POSTFIX} -c {self.config_dir} check", "/dev/null"],
            capture_output=True, text=True, timeout=60,
        )
        return proc.stdout

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start(self) -> PostfixInstance:
        reason = postfix_available()
        if reason is not None:
            raise PostfixUnavailable(reason)
        if self.root is not None:
            raise RuntimeError("PostfixInstance already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="outpost-postfix-"))
        self.root.chmod(0o755)
        # If the test process exits without calling stop(), do not leave a master behind.
        atexit.register(self.stop)
        try:
            self._write_config()
            self._postfix("start")
            self._wait_listening(timeout=20)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self, timeout: float) -> None:
        try:
            wait_port(self.host, self.port, timeout, banner=b"220", what="Postfix")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self._log_tail()}") from None

    def _master_pid(self) -> int | None:
        if self.root is None:
            return None
        try:
            return int((self.root / "spool" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Stop the instance (always: SIGKILL the master if `postfix stop` did not), keep a
        copy of the log and mailboxes in workdir, remove the private directory."""
        if self.root is None:
            return
        atexit.unregister(self.stop)
        pid = self._master_pid()
        if (self.config_dir / "main.cf").exists():
            self._postfix("stop", check=False)
        if pid is not None:
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        root, self.root = self.root, None
        for name, dest in (("log/postfix.log", "postfix.log"), ("mail", "mail")):
            src = root / name
            if not src.exists():
                continue
            target = self.workdir / dest
            if src.is_dir():
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(src, target)
            else:
                shutil.copyfile(src, target)
        shutil.rmtree(root, ignore_errors=True)

    # -- results ----------------------------------------------------------------------------

    def delivered(self, mailbox: str | None = None) -> list[bytes]:
        """Messages delivered to the Maildirs (known users, and capture-domain catch-alls),
        oldest first; `mailbox` ("alice@example.test" or a capture domain) narrows it."""
        base = self._mail_dir()
        if mailbox is None:
            pattern = "*/*/"
        elif "@" in mailbox:
            local, _, dom = mailbox.lower().partition("@")
            pattern = f"{dom}/{local}/"
        else:
            pattern = f"{mailbox.lower()}/catchall/"
        files = [f for d in base.glob(pattern) for sub in ("new", "cur")
                 for f in (d / sub).glob("*")]
        files.sort(key=lambda f: (f.stat().st_mtime, f.name))
        return [f.read_bytes() for f in files]

    def wait_delivered(
        self, count: int = 1, mailbox: str | None = None, timeout: float = 20.0
    ) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.delivered(mailbox)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(found)} of {count} messages delivered\n{self._log_tail()}"
                )
            time.sleep(0.1)

    def queue(self) -> str:
        """`postqueue -p` for this instance (to explain a missing delivery)."""
        proc = subprocess.run(
            ["/usr/sbin/postqueue", "-c", str(self.config_dir), "-p"],
            capture_output=True, text=True, timeout=30,
        )
        return proc.stdout + proc.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
