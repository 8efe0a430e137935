#!/usr/bin/env python3
"""Make real bounces with Debian's Exim, Sendmail, OpenSMTPD, Courier, dma (the DragonFly
Mail Agent), nullmailer, Dovecot's LDA and amavisd-new, for the golden samples in
tests/golden/bounces/<mta>-generated/.

This is a script, not a test: it needs root, apt access and a few minutes. Postfix is done
by tests/integration/test_postfix_dsn.py instead (Postfix is installed on CI; these are not).

Why not ``apt-get install``: Debian's MTA packages conflict with each other and with the
installed Postfix (apt would remove it). So each package is fetched with ``apt-get download``
and unpacked with ``dpkg -x`` into a private root under --work (default /tmp/mta-bounces);
its daemon runs from there, on loopback, with a private config, spool and log. Binaries
that insist on a compiled-in system user (Exim's "Debian-exim", OpenSMTPD's "opensmtpd" ...)
run inside a private mount + UTS namespace (``unshare -m -u``) in which a copy of /etc/passwd
and /etc/group that has those users is bind-mounted, so the host's files are never changed
(Courier and nullmailer, which need their whole installed tree, and dma, whose /etc/dma is
compiled in, get overlay mounts instead: see there).  dma and nullmailer are not daemons that
listen: mail is injected with their own sendmail, and dma has no queue lifetime to shorten
(it retries a deferral for days), so it makes rcpt-550 and rcpt-552 only.  Dovecot's LDA
is a delivery agent, not a relay, and amavis a content filter: each makes its own two
refusals (see run_dovecot, run_amavis).

Every MTA relays everything to one scripted MxServer (outpost_local.mx) on 127.0.0.91, which
answers RCPT per recipient:

* mallory@a.test -> "550 5.1.1 <...>: Recipient address rejected: User unknown"  (rcpt-550)
* dave@c.test    -> "552 5.2.2 <...>: Mailbox full"                               (rcpt-552)
* carol@b.test   -> "451 4.3.0 <...>: Temporary lookup failure", every time, until the MTA
  gives up because its queue lifetime (set to about a second) is over            (expired)
* anyone else (the bounce to b+Tok3n@bounces.test) -> 250, and is kept as the result.

Usage (as root, from the repository root):

    .venv/bin/python tests/tools/make_mta_bounces.py
        [--mta exim|sendmail|opensmtpd|courier|dma|nullmailer|dovecot|amavis|all]
        [--write]      # write tests/golden/bounces/<mta>-generated/<scenario>.eml + .json
        [--work DIR]   # scratch dir for .deb files, unpacked roots, spools (kept for a look)

Without --write it prints what the bounce parser makes of each bounce.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "layers" / "outpost"), str(REPO / "local")]

from outpost.bounces import parse_bounce  # noqa: E402
from outpost_local.lifecycle import wait_port  # noqa: E402
from outpost_local.mx import Accept, MxServer, RcptReply  # noqa: E402

GOLDEN = REPO / "tests" / "golden" / "bounces"
FIELDS = ("address", "status", "action", "kind", "reason", "reply_code")
RETURN_PATH = "b+Tok3n@bounces.test"
NEXT_HOP = "127.0.0.91"
MTA_HOST = "127.0.0.92"
MTA_PORT = 2525

# scenario name -> (recipient, send DSN options NOTIFY/ENVID?, waits for expiry?)
SCENARIOS: dict[str, tuple[str, bool, bool]] = {
    "rcpt-550": ("mallory@a.test", True, False),
    "rcpt-552": ("dave@c.test", True, False),
    "expired": ("carol@b.test", True, True),
}

PACKAGES = {
    "exim": ["exim4-daemon-light", "exim4-base", "exim4-config", "libidn12"],
    "sendmail": ["sendmail-bin", "sendmail-base", "sendmail-cf", "m4", "libwrap0"],
    "opensmtpd": ["opensmtpd"],
    "courier": ["courier-base", "courier-mta", "courier-authlib", "libcourier-unicode4",
                "libidn12", "libgamin0", "libltdl7"],
    "dma": ["dma"],
    "nullmailer": ["nullmailer"],
    "dovecot": ["dovecot-core", "dovecot-sieve", "libexttextcat-2.0-0", "liblua5.4-0",
                "libwrap0"],
    "amavis": ["amavisd-new", "libarchive-zip-perl", "libberkeleydb-perl",
               "libconvert-tnef-perl", "libconvert-uulib-perl", "libmime-tools-perl",
               "libnet-libidn-perl", "libnet-server-perl", "libunix-syslog-perl",
               "libnet-snmp-perl", "libidn12"],
}
# System users the binaries look up by their compiled-in names.
USERS = {
    "exim": ["Debian-exim"],
    "sendmail": ["smmta", "smmsp"],
    "opensmtpd": ["opensmtpd", "opensmtpq"],
    "courier": [],
    "dma": [],
    "nullmailer": [],
    "dovecot": [],
    "amavis": [],
}


def run_detached(*cmd: str) -> None:
    """Run a command whose children may outlive it (queue runs): no pipes to wait on."""
    subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60, check=False)


def sh(*cmd: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, timeout=120, **kw)  # type: ignore[call-overload]


def fetch(work: Path, mta: str) -> Path:
    """apt-get download the packages and dpkg -x them into work/root-<mta>."""
    debs, root = work / "debs", work / f"root-{mta}"
    debs.mkdir(parents=True, exist_ok=True)
    for pkg in PACKAGES[mta]:
        if not glob.glob(str(debs / f"{pkg}_*.deb")):
            sh("apt-get", "download", pkg, cwd=str(debs))
    if not root.exists():
        root.mkdir()
        for pkg in PACKAGES[mta]:
            [deb] = glob.glob(str(debs / f"{pkg}_*.deb"))
            sh("dpkg", "-x", deb, str(root))
    return root


def versions(work: Path, mta: str) -> str:
    out = []
    for pkg in PACKAGES[mta]:
        [deb] = glob.glob(str(work / "debs" / f"{pkg}_*.deb"))
        out.append(f"{pkg} {sh('dpkg-deb', '-f', deb, 'Version').stdout.strip()}")
    return ", ".join(out)


def namespace_prefix(work: Path, mta: str, binds: tuple[tuple[Path, str], ...] = ()) -> list[str]:
    """A command prefix: private mount namespace whose /etc/passwd+group know USERS[mta],
    plus `binds` (source, existing target) for binaries that re-exec compiled-in paths."""
    passwd, group = work / f"passwd-{mta}", work / f"group-{mta}"
    p, g = Path("/etc/passwd").read_text(), Path("/etc/group").read_text()
    for i, user in enumerate(USERS[mta]):
        uid = 64000 + i
        if f"\n{user}:" not in "\n" + p:
            p += f"{user}:x:{uid}:{uid}:{user}:/nonexistent:/usr/sbin/nologin\n"
        if f"\n{user}:" not in "\n" + g:
            g += f"{user}:x:{uid}:\n"
    passwd.write_text(p)
    group.write_text(g)
    mounts = [(str(passwd), "/etc/passwd"), (str(group), "/etc/group"),
              *((str(src), dst) for src, dst in binds)]
    # No DNS: Sendmail canonifies its host name through DNS before it reads its config; a
    # resolver pointed at a loopback address where nothing listens fails at once.
    # So each MTA gets its own UTS namespace with a fully qualified host name that the
    # private /etc/hosts knows (no dot in the name: Sendmail asks DNS, and waits).
    resolv, hosts = work / "resolv.conf", work / f"hosts-{mta}"
    resolv.write_text("nameserver 127.0.0.254\noptions timeout:1 attempts:1\n")
    hosts.write_text(f"127.0.0.1 localhost\n{MTA_HOST} {mta}-relay.test {mta}-relay\n")
    mounts += [(str(resolv), "/etc/resolv.conf"), (str(hosts), "/etc/hosts")]
    libdir = work / f"root-{mta}" / "usr/lib/x86_64-linux-gnu"
    if libdir.is_dir():
        # Libraries unpacked beside the MTA (libidn12 for Exim): a private ld.so.cache that
        # also lists them, because the MTAs scrub LD_LIBRARY_PATH when they re-exec.
        conf, cache = work / f"ld.so.conf-{mta}", work / f"ld.so.cache-{mta}"
        conf.write_text(f"{libdir}\ninclude /etc/ld.so.conf.d/*.conf\n")
        sh("ldconfig", "-f", str(conf), "-C", str(cache), "-X")
        mounts.append((str(cache), "/etc/ld.so.cache"))
    script = " && ".join(f"mount --bind {src} {dst}" for src, dst in mounts) + ' && exec "$@"'

    return ["unshare", "-m", "sh", "-c", script, "ns"]


def uid_of(work: Path, mta: str, user: str) -> int:
    for line in (work / f"passwd-{mta}").read_text().splitlines():
        f = line.split(":")
        if f[0] == user:
            return int(f[2])
    raise KeyError(user)


def message(rcpt: str, msgid: str) -> bytes:
    body = "".join(f"line {i:04d} " + "x" * 50 + "\r\n" for i in range(3))
    return (f"From: App <app@bounces.test>\r\nTo: {rcpt}\r\nSubject: Outpost DSN test\r\n"
            f"Message-ID: <{msgid}@bounces.test>\r\n\r\n{body}").encode()


def submit(rcpt: str, msgid: str, dsn: bool) -> None:
    with smtplib.SMTP(MTA_HOST, MTA_PORT, timeout=30) as smtp:
        smtp.ehlo("client.test")
        mail_opts = [f"ENVID=EnV-{msgid}"] if dsn and smtp.has_extn("dsn") else []
        rcpt_opts = ["NOTIFY=FAILURE"] if dsn and smtp.has_extn("dsn") else []
        smtp.sendmail(RETURN_PATH, [rcpt], message(rcpt, msgid), mail_options=mail_opts,
                      rcpt_options=rcpt_opts)


def next_hop() -> MxServer:
    mx = MxServer(NEXT_HOP, 0, [
        RcptReply(550, "5.1.1 <mallory@a.test>: Recipient address rejected: User unknown",
                  only={"mallory@a.test"}),
        RcptReply(552, "5.2.2 <dave@c.test>: Mailbox full", only={"dave@c.test"}),
        RcptReply(451, "4.3.0 <carol@b.test>: Temporary lookup failure",
                  only={"carol@b.test"}),
        Accept(),
    ], hostname="mx.a.test")
    mx.start()
    return mx


def wait_bounce(mx: MxServer, seen: int, kick: Callable[[], None] | None,
                timeout: float = 60) -> bytes:
    """The next message the next hop accepted for RETURN_PATH (kick() runs the MTA's queue)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = [r for r in list(mx.received) if RETURN_PATH.lower() in
               (a.lower() for a in r.rcpt_tos)]
        if len(got) > seen:
            return got[seen].data
        if kick is not None:
            kick()
        time.sleep(1.5)
    raise TimeoutError(f"no bounce arrived; next hop saw: {mx.log}")


# -- Exim ------------------------------------------------------------------------------------

EXIM_CONF = """\
primary_hostname = exim-relay.test
qualify_domain = exim-relay.test
spool_directory = {spool}
log_file_path = {log}/%slog
daemon_smtp_ports = {port}
local_interfaces = {host}
never_users =
trusted_users = root
host_lookup =
rfc1413_hosts =
dsn_advertise_hosts = *
acl_smtp_rcpt = acl_rcpt
# a retry cutoff of 1s: the first later queue run after a deferral returns the message
# ("retry timeout exceeded"), like a real MTA does after days.

begin acl
acl_rcpt:
  accept

begin routers
smarthost:
  driver = manualroute
  route_list = * {nh_host}
  transport = remote_smtp
  self = send
  no_more

begin transports
remote_smtp:
  driver = smtp
  port = {nh_port}
  hosts_avoid_tls = *
  allow_localhost

begin retry
* * F,1s,1s

begin rewrite
"""


def run_exim(work: Path, mx: MxServer) -> dict[str, bytes]:
    root = fetch(work, "exim")
    # Exim re-execs itself as /usr/sbin/exim4 (deliveries, -oP): show it its own /usr/sbin.
    ns = namespace_prefix(work, "exim", ((root / "usr/sbin", "/usr/sbin"),))
    inst = work / "exim"
    shutil.rmtree(inst, ignore_errors=True)
    (inst / "spool").mkdir(parents=True)
    (inst / "log").mkdir()
    uid = uid_of(work, "exim", "Debian-exim")
    for d in (inst / "spool", inst / "log"):
        os.chown(d, uid, uid)
    conf = inst / "exim.conf"
    conf.write_text(EXIM_CONF.format(spool=inst / "spool", log=inst / "log", port=MTA_PORT,
                                     host=MTA_HOST, nh_host=NEXT_HOP, nh_port=mx.port))
    exim = [*ns, "/usr/sbin/exim4", "-C", str(conf)]
    pidfile = inst / "exim.pid"
    run_detached(*exim, "-bd", "-oP", str(pidfile))
    try:
        wait_port(MTA_HOST, MTA_PORT, 20)

        def kick() -> None:
            run_detached(*exim, "-qff")

        return collect(mx, kick)
    finally:
        stop_pidfile(pidfile)
        (work / "exim-mainlog.txt").write_text((inst / "log" / "mainlog").read_text())


def stop_pidfile(pidfile: Path) -> None:
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def collect(mx: MxServer, kick: Callable[[], None], scenarios: dict[str, tuple[str, bool, bool]]
            | None = None) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, (rcpt, dsn, expire) in (scenarios or SCENARIOS).items():
        seen = sum(1 for r in mx.received if RETURN_PATH.lower() in
                   (a.lower() for a in r.rcpt_tos))
        submit(rcpt, name, dsn)
        if expire:
            time.sleep(2.5)  # past the one-second queue lifetime
        out[name] = wait_bounce(mx, seen, kick if expire else None)
    return out


# -- Sendmail --------------------------------------------------------------------------------

# Built with the m4 macros from sendmail-cf, like Debian's own sendmail.mc but private:
# relay everything to the next hop ([ip] = no MX lookup), no DNS at all (service switch:
# hosts from files), queue return after one second so a deferral expires on the next run.
SENDMAIL_MC = """\
divert(-1)
include(`{cf}/m4/cf.m4')
define(`_USE_ETC_MAIL_')dnl
VERSIONID(`outpost make_mta_bounces')
OSTYPE(`linux')dnl
define(`confDOMAIN_NAME', `sendmail-relay.test')dnl
define(`confDEF_USER_ID', `smmta:smmta')dnl
define(`QUEUE_DIR', `{inst}/mqueue')dnl
define(`STATUS_FILE', `{inst}/sendmail.st')dnl
define(`confPID_FILE', `{inst}/sendmail.pid')dnl
define(`ALIAS_FILE', `{inst}/aliases')dnl
define(`confSERVICE_SWITCH_FILE', `{inst}/service.switch')dnl
define(`confHOSTS_FILE', `/etc/hosts')dnl
define(`confHELP_FILE', `')dnl
define(`confCONTROL_SOCKET_NAME', `')dnl
define(`confTO_QUEUERETURN', `1s')dnl
define(`confTO_QUEUEWARN', `1h')dnl
define(`confDELIVERY_MODE', `background')dnl
define(`confDONT_BLAME_SENDMAIL', `GroupWritableDirPathSafe,InsufficientEntropy')dnl
define(`SMART_HOST', `esmtp:[{nh_host}]')dnl
define(`ESMTP_MAILER_ARGS', `TCP $h {nh_port}')dnl
FEATURE(`nocanonify')dnl
FEATURE(`accept_unresolvable_domains')dnl
FEATURE(`promiscuous_relay')dnl
DAEMON_OPTIONS(`Family=inet, Name=MTA, Port={port}, Addr={host}')dnl
MAILER(`smtp')dnl
"""


def run_sendmail(work: Path, mx: MxServer) -> dict[str, bytes]:
    root = fetch(work, "sendmail")
    ns = namespace_prefix(work, "sendmail")
    inst = work / "sendmail"
    shutil.rmtree(inst, ignore_errors=True)
    (inst / "mqueue").mkdir(parents=True)
    os.chmod(inst / "mqueue", 0o700)
    (inst / "aliases").write_text("postmaster: root\n")
    (inst / "service.switch").write_text("hosts files\naliases files\n")
    cfdir = root / "usr/share/sendmail/cf"
    (inst / "sendmail.mc").write_text(SENDMAIL_MC.format(
        cf=cfdir, inst=inst, nh_host=NEXT_HOP, nh_port=mx.port, port=MTA_PORT, host=MTA_HOST))
    cf = sh(str(root / "usr/bin/m4"), str(inst / "sendmail.mc")).stdout
    (inst / "sendmail.cf").write_text(cf)
    sendmail = [*ns, str(root / "usr/libexec/sendmail/sendmail"), "-C", str(inst / "sendmail.cf")]
    sh(*sendmail, "-bi", check=False)  # newaliases
    run_detached(*sendmail, "-bd", "-L", "sm-mta-outpost")
    try:
        wait_port(MTA_HOST, MTA_PORT, 20)

        def kick() -> None:
            run_detached(*sendmail, "-q")

        return collect(mx, kick)
    finally:
        stop_pidfile(inst / "sendmail.pid")


# -- OpenSMTPD -------------------------------------------------------------------------------

# "queue ttl 1s": a message still undeliverable one second after it arrived is returned.
OPENSMTPD_CONF = """\
queue ttl 1s
listen on {host} port {port} hostname opensmtpd-relay.test
action "relay" relay host smtp://{nh_host}:{nh_port}
match from any for any action "relay"
"""


def run_opensmtpd(work: Path, mx: MxServer) -> dict[str, bytes]:
    root = fetch(work, "opensmtpd")
    inst = work / "opensmtpd"
    shutil.rmtree(inst, ignore_errors=True)
    # smtpd's paths are compiled in (/var/spool/smtpd, /var/lib/opensmtpd/empty for its
    # chroots, /var/run/smtpd.sock): private directories are mounted over /var/spool,
    # /var/lib and /run inside its namespace only.
    spool, varlib, run = inst / "spool", inst / "varlib", inst / "run"
    for d in (spool, varlib / "opensmtpd" / "empty", run):
        d.mkdir(parents=True)
    conf = inst / "smtpd.conf"
    conf.write_text(OPENSMTPD_CONF.format(host=MTA_HOST, port=MTA_PORT, nh_host=NEXT_HOP,
                                          nh_port=mx.port))
    ns = namespace_prefix(work, "opensmtpd", ((spool, "/var/spool"), (varlib, "/var/lib"),
                                               (run, "/run")))
    log = open(work / "opensmtpd.log", "w")
    proc = subprocess.Popen([*ns, str(root / "usr/sbin/smtpd"), "-d", "-f", str(conf)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_port(MTA_HOST, MTA_PORT, 20)
        return collect(mx, lambda: None)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


# -- Courier ---------------------------------------------------------------------------------

# Courier's paths (/etc/courier, /usr/lib/courier, /var/lib/courier, /run/courier) are compiled
# in and it needs the package's postinst work done, so it runs in a namespace whose /etc,
# /usr, /var and /run are overlays: the unpacked packages over the host's directories, with
# a fresh private upper layer (the host's directories are never written). The script below
# is the relevant part of courier-base's and courier-mta's postinst, then courierd, then
# injection with Courier's own sendmail (-N failure = NOTIFY=FAILURE).
COURIER_NS = """\
set -e
for d in etc usr var run; do
  mkdir -p {inst}/$d.u {inst}/$d.w {root}/$d
  mount -t overlay overlay -o lowerdir={root}/$d:/$d,upperdir={inst}/$d.u,workdir={inst}/$d.w /$d
done
ldconfig
exec "$@"
"""
COURIER_SETUP = """\
echo "courier:x:64100:64100:courier:/var/lib/courier:/usr/sbin/nologin" >> /etc/passwd
echo "courier:x:64100:" >> /etc/group
hostname courier-relay.test
echo "{host} courier-relay.test" >> /etc/hosts
echo "nameserver 127.0.0.254" > /etc/resolv.conf
echo courier-relay.test > /etc/courier/me
echo courier-relay.test > /etc/courier/defaultdomain
echo ": [{nh_host}],{nh_port}" > /etc/courier/esmtproutes
echo 20s > /etc/courier/queuetime
for f in retryalpha retrybeta retrygamma retrymaxdelta; do echo 5 > /etc/courier/$f; done
echo 1 > /etc/courier/retrybeta
chown -R courier:courier /var/lib/courier
chmod 0770 /var/lib/courier/tmp
chown root:courier /etc/courier /etc/courier/*
chown root:courier /usr/sbin/sendmail; chmod 2755 /usr/sbin/sendmail
chown courier:courier /usr/lib/courier/courier/submitmkdir
chmod 4755 /usr/lib/courier/courier/submitmkdir
mkdir -p /run/courier; chown courier:courier /run/courier
ln -sf makedat.courier /usr/bin/makedat
/usr/lib/courier/makealiases; /usr/lib/courier/makesmtpaccess
/usr/lib/courier/makeacceptmailfor; /usr/lib/courier/makehosteddomains
/usr/lib/courier/courier/courierd &
sleep 2
for s in {scenarios}; do
  rcpt=${{s#*=}}; name=${{s%%=*}}
  hdr='From: App <app@bounces.test>\\nTo: %s\\nSubject: Outpost DSN test\\n'
  printf "$hdr"'Message-ID: <%s@bounces.test>\\n\\nline 0000\\n' "$rcpt" "$name" \\
    | /usr/sbin/sendmail -f {rp} -N failure "$rcpt"
done
while [ ! -e {inst}/stop ]; do sleep 0.5; done
/usr/sbin/courier stop || true
kill %1 2>/dev/null || true
"""


def run_courier(work: Path, mx: MxServer) -> dict[str, bytes]:
    root = fetch(work, "courier")
    inst = work / "courier"
    shutil.rmtree(inst, ignore_errors=True)
    inst.mkdir()
    (inst / "ns.sh").write_text(COURIER_NS.format(inst=inst, root=root))
    (inst / "setup.sh").write_text(COURIER_SETUP.format(
        host=MTA_HOST, nh_host=NEXT_HOP, nh_port=mx.port, rp=RETURN_PATH, inst=inst,
        scenarios=" ".join(f"{n}={r}" for n, (r, _, _) in SCENARIOS.items())))
    log = open(work / "courier.log", "w")
    proc = subprocess.Popen(["unshare", "-m", "-u", "sh", str(inst / "ns.sh"), "sh",
                             str(inst / "setup.sh")], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    out: dict[str, bytes] = {}
    try:
        end = time.monotonic() + 90
        while len(out) < len(SCENARIOS) and time.monotonic() < end:
            for r in list(mx.received):
                for name in SCENARIOS:
                    if f"<{name}@bounces.test>".encode() in r.data and RETURN_PATH.lower() in (
                            a.lower() for a in r.rcpt_tos):
                        out.setdefault(name, r.data)
            time.sleep(1)
        return {n: out[n] for n in SCENARIOS if n in out}
    finally:
        (inst / "stop").touch()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def bounces_by_message_id(mx: MxServer, names: list[str], timeout: float) -> dict[str, bytes]:
    """The bounces the next hop accepted for RETURN_PATH, by scenario: a bounce is
    scenario ``name``'s when it quotes Message-ID <name@bounces.test> (as message() sets)."""
    out: dict[str, bytes] = {}
    end = time.monotonic() + timeout
    while len(out) < len(names) and time.monotonic() < end:
        for r in list(mx.received):
            if RETURN_PATH.lower() not in (a.lower() for a in r.rcpt_tos):
                continue
            for name in names:
                if f"<{name}@bounces.test>".encode() in r.data:
                    out.setdefault(name, r.data)
        time.sleep(1)
    return {n: out[n] for n in names if n in out}


# -- dma (DragonFly Mail Agent) --------------------------------------------------------------

# dma reads /etc/dma/dma.conf (compiled in): /etc is an overlay in its mount namespace with
# a private upper layer that holds it.  NULLCLIENT: everything, the bounce to the sender
# too, goes to the smarthost.
DMA_CONF = """\
SMARTHOST {nh_host}
PORT {nh_port}
SPOOLDIR {inst}/spool
ALIASES {inst}/aliases
MAILNAME dma-relay.test
NULLCLIENT
"""
DMA_SCENARIOS = {k: v for k, v in SCENARIOS.items() if k != "expired"}


def run_dma(work: Path, mx: MxServer) -> dict[str, bytes]:
    root = fetch(work, "dma")
    inst = work / "dma"
    shutil.rmtree(inst, ignore_errors=True)
    for d in ("conf", "spool", "etc.u", "etc.w"):
        (inst / d).mkdir(parents=True)
    os.chmod(inst / "spool", 0o1777)  # dma drops to its setgid group "mail" to write it
    (inst / "aliases").write_text("")
    (inst / "conf" / "dma.conf").write_text(DMA_CONF.format(nh_host=NEXT_HOP, nh_port=mx.port,
                                                            inst=inst))
    (inst / "conf" / "auth.conf").write_text("")
    script = (f"mount -t overlay overlay -o lowerdir=/etc,upperdir={inst}/etc.u,"
              f"workdir={inst}/etc.w /etc && mkdir -p /etc/dma && cp {inst}/conf/* /etc/dma/"
              ' && exec "$@"')
    dma = ["unshare", "-m", "sh", "-c", script, "ns", str(root / "usr/sbin/dma")]
    for name, (rcpt, _, _) in DMA_SCENARIOS.items():
        # dma forks its delivery into the background and returns.
        subprocess.run([*dma, "-f", RETURN_PATH, rcpt], input=message(rcpt, name),
                       check=True, timeout=60, capture_output=True)
    return bounces_by_message_id(mx, list(DMA_SCENARIOS), 60)


# -- nullmailer ------------------------------------------------------------------------------

# nullmailer's paths (/etc/nullmailer, /usr/lib/nullmailer, /var/spool/nullmailer, its
# nullmailer-dsn and nullmailer-queue) are compiled in: /etc, /usr, /var and /run are overlays
# of the unpacked package over the host's directories with a private upper layer (as for
# Courier).  queuelifetime 3 s: a deferred message fails for good on the first queue run
# after three seconds (its only notice says "Action: delayed" all the same: see
# SOURCES.md).  nullmailer-send runs as "mail", as its systemd unit does.
NULLMAILER_NS = """\
set -e
for d in etc usr var run; do
  mkdir -p {inst}/$d.u {inst}/$d.w {root}/$d
  mount -t overlay overlay -o lowerdir={root}/$d:/$d,upperdir={inst}/$d.u,workdir={inst}/$d.w /$d
done
mkdir -p /etc/nullmailer /var/spool/nullmailer/queue /var/spool/nullmailer/tmp \\
  /var/spool/nullmailer/failed
mkfifo /var/spool/nullmailer/trigger
chown -R mail:root /var/spool/nullmailer; chmod 622 /var/spool/nullmailer/trigger
echo nullmailer-relay.test > /etc/mailname
echo "{nh_host} smtp port={nh_port}" > /etc/nullmailer/remotes
echo 3 > /etc/nullmailer/queuelifetime
echo 1 > /etc/nullmailer/pausetime
echo 2 > /etc/nullmailer/maxpause
echo 5 > /etc/nullmailer/bouncelines
cd /var/spool/nullmailer
setpriv --reuid=mail --regid=mail --clear-groups /usr/sbin/nullmailer-send &
sender=$!
sleep 1
for s in {scenarios}; do
  rcpt=${{s#*=}}; name=${{s%%=*}}
  hdr='From: App <app@bounces.test>\\nTo: %s\\nSubject: Outpost DSN test\\n'
  printf "$hdr"'Message-ID: <%s@bounces.test>\\n\\nline 0000\\n' "$rcpt" "$name" \\
    | /usr/sbin/sendmail -f {rp} "$rcpt"
done
while [ ! -e {inst}/stop ]; do sleep 0.5; done
kill $sender
"""


def run_nullmailer(work: Path, mx: MxServer) -> dict[str, bytes]:
    root = fetch(work, "nullmailer")
    inst = work / "nullmailer"
    shutil.rmtree(inst, ignore_errors=True)
    inst.mkdir()
    (inst / "ns.sh").write_text(NULLMAILER_NS.format(
        inst=inst, root=root, nh_host=NEXT_HOP, nh_port=mx.port, rp=RETURN_PATH,
        scenarios=" ".join(f"{n}={r}" for n, (r, _, _) in SCENARIOS.items())))
    log = open(work / "nullmailer.log", "w")
    proc = subprocess.Popen(["unshare", "-m", "sh", str(inst / "ns.sh")],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)

    try:
        return bounces_by_message_id(mx, list(SCENARIOS), 60)
    finally:
        (inst / "stop").touch()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        try:  # nullmailer-send too, whatever the script did (it runs in proc's group)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        log.close()


# -- Dovecot LDA ------------------------------------------------------------------------------

# Dovecot's delivery agent (dovecot-lda) refuses a message itself and mails the refusal to
# the envelope sender through submission_host (the next hop): over quota with
# quota_full_tempfail = no (an RFC 3464 report, Status 5.2.2), or by the recipient's Sieve
# script ("reject": RFC 5429, an RFC 8098 disposition notification).  It runs as "mail" for
# the recipient named by $USER / $HOME (no userdb: no auth process), its /usr and /etc
# overlays of the unpacked packages (plugins and libraries are found by compiled-in paths),
# and its own host name (the refusal's Message-ID uses it).
DOVECOT_CONF = """\
base_dir = {inst}/run
state_dir = {inst}/state
log_path = {inst}/log/dovecot.log
info_log_path = {inst}/log/dovecot.log
protocols =
ssl = no
hostname = dovecot-relay.test
postmaster_address = postmaster@dovecot-relay.test
submission_host = {nh_host}:{nh_port}
mail_location = maildir:~/Maildir
mail_plugins = quota
quota_full_tempfail = no
protocol lda {{
  mail_plugins = $mail_plugins sieve
}}
plugin {{
  quota = maildir:User quota
  quota_rule = *:storage=1K
  sieve = file:~/sieve;active=~/.dovecot.sieve
}}
"""
DOVECOT_NS = """\
set -e
for d in etc usr; do
  mkdir -p {inst}/$d.u {inst}/$d.w
  mount -t overlay overlay -o lowerdir={root}/$d:/$d,upperdir={inst}/$d.u,workdir={inst}/$d.w /$d
done
ldconfig
hostname dovecot-relay.test
exec "$@"
"""
# scenario -> recipient's local part; erin's Sieve script rejects everything, frank's
# mailbox has a 1 KiB quota that the ~3 KiB message exceeds.
DOVECOT_SCENARIOS = {"quota": "frank", "sieve-reject": "erin"}
MAIL_UID = 8  # Debian's "mail" user, which owns the mailboxes


def run_dovecot(work: Path, mx: MxServer) -> dict[str, bytes]:
    root = fetch(work, "dovecot")
    inst = work / "dovecot"
    shutil.rmtree(inst, ignore_errors=True)
    for d in ("log", "home/frank", "home/erin"):
        (inst / d).mkdir(parents=True)
    (inst / "home/erin/.dovecot.sieve").write_text(
        'require "reject";\nreject "I do not accept messages from this sender.";\n')
    sh("chown", "-R", f"{MAIL_UID}:{MAIL_UID}", str(inst / "log"), str(inst / "home"))
    (inst / "dovecot.conf").write_text(DOVECOT_CONF.format(inst=inst, nh_host=NEXT_HOP,
                                                           nh_port=mx.port))
    (inst / "ns.sh").write_text(DOVECOT_NS.format(inst=inst, root=root))
    for name, user in DOVECOT_SCENARIOS.items():
        rcpt = f"{user}@dovecot-relay.test"
        raw = message(rcpt, name) + b"".join(b"y" * 70 + b"\r\n" for _ in range(40))
        sh("unshare", "-m", "-u", "sh", str(inst / "ns.sh"), "setpriv", f"--reuid={MAIL_UID}",
           f"--regid={MAIL_UID}", "--clear-groups", "env", f"HOME={inst}/home/{user}",
           f"USER={user}", "/usr/lib/dovecot/dovecot-lda", "-c", str(inst / "dovecot.conf"),
           "-f", RETURN_PATH, "-a", rcpt, input=raw.decode())
    return bounces_by_message_id(mx, list(DOVECOT_SCENARIOS), 30)


# -- amavisd-new -----------------------------------------------------------------------------

# amavis is a content filter between two MTAs (it speaks SMTP on both sides); with a final
# destiny of D_BOUNCE it refuses a message itself and sends the sender an RFC 3464 report
# through $notify_method (the next hop).  Virus and spam checks are off (no scanner, no
# SpamAssassin here); what it refuses on its own: a banned attachment name ("banned",
# invoice.exe) and an invalid header section ("bad-header": raw 8-bit Subject, no Date).
# Its Perl modules come unpacked under a /usr overlay; it runs as "mail", on MTA_HOST.
AMAVIS_CONF = """\
use strict;
$MYHOME = '{inst}/home';
$TEMPBASE = "$MYHOME/tmp";
$db_home = "$MYHOME/db";
$helpers_home = "$MYHOME/var";
$QUARANTINEDIR = undef;
$daemon_user = 'mail';
$daemon_group = 'mail';
$mydomain = 'amavis-relay.test';
$myhostname = 'amavis-relay.test';
$pid_file = "$MYHOME/amavisd.pid";
$lock_file = "$MYHOME/amavisd.lock";
$inet_socket_bind = '{host}';
$inet_socket_port = {port};
@inet_acl = qw(127.0.0.0/8);
$forward_method = 'smtp:[{nh_host}]:{nh_port}';
$notify_method = $forward_method;
@bypass_virus_checks_maps = (1);
@bypass_spam_checks_maps = (1);
$enable_dkim_verification = 0;
$enable_dkim_signing = 0;
$enable_db = 0;
$enable_global_cache = 0;
$DO_SYSLOG = 0;
$LOGFILE = "$MYHOME/amavis.log";
$log_level = 2;
$max_servers = 1;
$final_banned_destiny = D_BOUNCE;
$final_bad_header_destiny = D_BOUNCE;
$banned_filename_re = new_RE(qr'.\\.(?:exe|pif|scr)$'i);
@local_domains_maps = (['.test']);
1;
"""
AMAVIS_NS = """\
set -e
mkdir -p {inst}/usr.u {inst}/usr.w
mount -t overlay overlay -o lowerdir={root}/usr:/usr,upperdir={inst}/usr.u,workdir={inst}/usr.w /usr
ldconfig
hostname amavis-relay.test
exec "$@"
"""
AMAVIS_BANNED = (
    b"From: App <app@bounces.test>\r\nTo: grace@a.test\r\nSubject: Outpost DSN test\r\n"
    b"Message-ID: <banned@bounces.test>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n'
    b'\r\nsee attachment\r\n--b1\r\nContent-Type: application/octet-stream; name="invoice.exe"'
    b'\r\nContent-Disposition: attachment; filename="invoice.exe"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA\r\n"
    b"--b1--\r\n")
AMAVIS_BAD_HEADER = (
    "From: App <app@bounces.test>\r\nTo: heidi@a.test\r\nSubject: Outpost DSN test caf\xe9\r\n"
    "Message-ID: <bad-header@bounces.test>\r\n\r\nline 0000\r\n").encode("latin-1")
AMAVIS_SCENARIOS = {"banned": ("grace@a.test", AMAVIS_BANNED),
                    "bad-header": ("heidi@a.test", AMAVIS_BAD_HEADER)}


def run_amavis(work: Path, mx: MxServer) -> dict[str, bytes]:
    root = fetch(work, "amavis")
    inst = work / "amavis"
    shutil.rmtree(inst, ignore_errors=True)
    for d in ("home/tmp", "home/db", "home/var"):
        (inst / d).mkdir(parents=True)
    sh("chown", "-R", f"{MAIL_UID}:{MAIL_UID}", str(inst / "home"))
    (inst / "amavisd.conf").write_text(AMAVIS_CONF.format(
        inst=inst, host=MTA_HOST, port=MTA_PORT, nh_host=NEXT_HOP, nh_port=mx.port))
    (inst / "ns.sh").write_text(AMAVIS_NS.format(inst=inst, root=root))
    log = open(work / "amavis.out", "w")
    proc = subprocess.Popen(["unshare", "-m", "-u", "sh", str(inst / "ns.sh"),
                             "/usr/sbin/amavisd", "-c", str(inst / "amavisd.conf"),
                             "foreground"], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port(MTA_HOST, MTA_PORT, 60)
        for rcpt, raw in AMAVIS_SCENARIOS.values():
            with smtplib.SMTP(MTA_HOST, MTA_PORT, timeout=60) as smtp:
                smtp.ehlo("client.test")
                smtp.sendmail(RETURN_PATH, [rcpt], raw)  # amavis answers 250, then bounces
        return bounces_by_message_id(mx, list(AMAVIS_SCENARIOS), 30)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


RUNNERS: dict[str, Callable[[Path, MxServer], dict[str, bytes]]] = {
    "exim": run_exim,
    "sendmail": run_sendmail,
    "opensmtpd": run_opensmtpd,
    "courier": run_courier,
    "dma": run_dma,
    "nullmailer": run_nullmailer,
    "dovecot": run_dovecot,
    "amavis": run_amavis,
}


# Sisimai 4.25 (Debian's libsisimai-perl) on one bounce: the reference each new sample's
# .json keeps ("sisimai"), from a parser we did not write.
SISIMAI = (
    "use Sisimai; use JSON::PP; my $v = Sisimai->make($ARGV[0], delivered => 1) || [];"
    "print JSON::PP->new->canonical->encode([map { { address => $_->recipient->address,"
    " deliverystatus => $_->deliverystatus, reason => $_->reason, action => $_->action,"
    " kind => ($_->softbounce == 1 ? 'soft' : $_->softbounce == 0 ? 'hard' : 'unknown'),"
    " smtpagent => $_->smtpagent } } @$v])"
)


def sisimai_answer(path: Path) -> list[dict[str, str]] | None:
    done = subprocess.run(["perl", "-e", SISIMAI, str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def view(raw: bytes) -> dict[str, object]:
    rep = parse_bounce(raw)
    return {"kind": rep.kind, "family": rep.family,
            "recipients": [{f: getattr(r, f) for f in FIELDS} for r in rep.recipients]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mta", default="all", choices=[*RUNNERS, "all"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/mta-bounces"))
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (daemons, unshare -m, dpkg -x)")
    args.work.mkdir(parents=True, exist_ok=True)
    for mta in RUNNERS if args.mta == "all" else [args.mta]:
        mx = next_hop()
        try:
            bounces = RUNNERS[mta](args.work, mx)
        finally:
            mx.stop()
        print(f"== {mta}: {versions(args.work, mta)}")
        for name, raw in bounces.items():
            v = view(raw)
            print(f"  {name}: {json.dumps(v)}")
            if args.write:
                d = GOLDEN / f"{mta}-generated"
                d.mkdir(parents=True, exist_ok=True)
                (d / f"{name}.eml").write_bytes(raw)
                ref = sisimai_answer(d / f"{name}.eml")
                if ref is not None:
                    v["sisimai"] = ref
                (d / f"{name}.json").write_text(json.dumps(v, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
