"""The guest harness itself: a real systemd boots, runs units, stays isolated, leaves nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.guest import Guest, GuestError, cleanup_leftovers, guest_supported

pytestmark = pytest.mark.e2e

_REPO_ROOT = Path(__file__).resolve().parents[2]

# Services that may run in a freshly booted guest: nothing of the host's beyond the basics.
_ALLOWED_RUNNING = {"systemd-journald.service", "dbus.service"}

_NOTIFY_SCRIPT = textwrap.dedent("""\
    import os, socket, time

    def notify(msg):
        addr = os.environ["NOTIFY_SOCKET"]
        if addr.startswith("@"):
            addr = "\\0" + addr[1:]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(msg.encode())

    time.sleep(1)
    notify("READY=1")
    print("ready", flush=True)
    flag = "/run/e2e-notify/stop-pings"
    while True:
        if os.path.exists(flag):
            os.unlink(flag)          # only the first instance goes silent
            print("stopping watchdog pings", flush=True)
            while True:
                time.sleep(60)
        notify("WATCHDOG=1")
        time.sleep(0.3)
    """)


def _wait_for(check: Callable[[], object], timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def _prop(g: Guest, unit: str, prop: str) -> str:
    return g.systemctl("show", "-p", prop, "--value", unit).stdout.strip()


def _free_host_port(preferred: int) -> int:
    """preferred if nothing on the host listens on it, else some other free port."""
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", preferred)) != 0:
            return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mnt_ns_holders(inode: int) -> list[int]:
    """Host pids whose mount namespace is the one with this inode."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.stat(entry / "ns" / "mnt").st_ino == inode:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


# --------------------------------------------------------------------------------------------


def test_guest_supported_here() -> None:
    ok, reason = guest_supported()
    assert isinstance(ok, bool)
    assert ok or reason


def test_boots_quickly_into_a_quiet_system(guest: Guest) -> None:
    assert guest.boot_seconds is not None and guest.boot_seconds < 10
    state = guest.systemctl("is-system-running", check=False).stdout.strip()
    assert state in ("running", "degraded")

    failed = guest.systemctl("--failed", "--no-legend", "--plain").stdout.strip()
    assert failed == "", f"failed units in a fresh guest:\n{failed}"

    running = guest.systemctl("list-units", "--type=service", "--state=running", "--no-legend",
                              "--plain").stdout.split()
    services = {w for w in running if w.endswith(".service")}
    assert services <= _ALLOWED_RUNNING, f"unexpected services running: {services}"

    # The host's own services are known to the guest but masked or simply not started.
    for unit in ("postgresql.service", "getty@tty1.service", "systemd-timesyncd.service",
                 "avahi-daemon.service", "apt-daily.timer", "systemd-tmpfiles-clean.timer"):
        assert guest.systemctl("is-active", unit, check=False).stdout.strip() == "inactive"

    # Its own identity and namespaces.
    assert guest.run(["hostname"]).stdout.strip() == "ghostagent-e2e"
    assert guest.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    assert guest.run(["cat", "/etc/machine-id"]).stdout != Path("/etc/machine-id").read_text()
    assert guest.run(["findmnt", "-n", "-o", "FSTYPE", "/"]).stdout.strip() == "overlay"
    for path in ("/run", "/tmp"):
        assert guest.run(["findmnt", "-n", "-o", "FSTYPE", path]).stdout.strip() == "tmpfs"
    caps = guest.run(["grep", "CapBnd", "/proc/1/status"]).stdout.split()[1]
    for bit in (12, 16, 17, 25):  # net_admin, sys_module, sys_rawio, sys_time
        assert not int(caps, 16) & (1 << bit), f"capability {bit} not dropped"


def test_notify_unit_start_blocks_until_ready_and_watchdog_restarts(guest: Guest) -> None:
    guest.write_file("/opt/e2e/notify.py", _NOTIFY_SCRIPT)
    guest.install_unit("e2e-notify.service", textwrap.dedent("""\
        [Unit]
        Description=e2e Type=notify probe
        [Service]
        Type=notify
        ExecStart=/usr/bin/python3 -u /opt/e2e/notify.py
        RuntimeDirectory=e2e-notify
        RuntimeDirectoryPreserve=yes
        WatchdogSec=2
        Restart=on-failure
        RestartSec=0.2
        """))
    t0 = time.monotonic()
    guest.systemctl("start", "e2e-notify.service")
    took = time.monotonic() - t0
    assert took >= 0.9, f"start returned after {took:.2f}s, before READY=1"
    assert guest.systemctl("is-active", "e2e-notify.service").stdout.strip() == "active"
    assert _prop(guest, "e2e-notify.service", "NRestarts") == "0"

    # Stop the pings: the watchdog fires (SIGABRT) and Restart=on-failure starts it again.
    guest.run(["touch", "/run/e2e-notify/stop-pings"])
    _wait_for(lambda: int(_prop(guest, "e2e-notify.service", "NRestarts")) >= 1, 10,
              "a watchdog restart")
    _wait_for(lambda: guest.systemctl("is-active", "e2e-notify.service", check=False)
              .stdout.strip() == "active", 10, "the restarted unit to be active")
    log = guest.journal("e2e-notify.service")
    assert "atchdog timeout" in log, log
    assert "stopping watchdog pings" in log


def test_exit_78_is_not_restarted(shared_guest: Guest) -> None:
    g = shared_guest
    g.install_unit("e2e-exit78.service", textwrap.dedent("""\
        [Service]
        ExecStart=/bin/sh -c 'echo bad config >&2; exit 78'
        Restart=on-failure
        RestartSec=0.1
        RestartPreventExitStatus=78
        """))
    g.systemctl("start", "e2e-exit78.service")
    _wait_for(lambda: g.systemctl("is-failed", "e2e-exit78.service", check=False)
              .stdout.strip() == "failed", 10, "the unit to fail")
    time.sleep(0.5)  # give a (wrong) restart the time to happen
    assert _prop(g, "e2e-exit78.service", "ActiveState") == "failed"
    assert _prop(g, "e2e-exit78.service", "NRestarts") == "0"
    assert _prop(g, "e2e-exit78.service", "ExecMainStatus") == "78"
    status = g.systemctl("status", "e2e-exit78.service", check=False)
    assert status.returncode == 3
    assert "status=78" in status.stdout, status.stdout


def test_journal_shows_unit_output(shared_guest: Guest) -> None:
    g = shared_guest
    token = f"hello-from-guest-{uuid.uuid4().hex}"
    g.install_unit("e2e-hello.service", textwrap.dedent(f"""\
        [Service]
        Type=oneshot
        ExecStart=/bin/echo {token}
        """))
    g.systemctl("start", "e2e-hello.service")
    _wait_for(lambda: token in g.journal("e2e-hello.service"), 10, "the line in the journal")


def test_run_reports_failures_and_kills_what_times_out(shared_guest: Guest) -> None:
    g = shared_guest
    with pytest.raises(GuestError, match=r"(?s)exit 3 .*stdout: out\n.*stderr: err"):
        g.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert g.run(["sh", "-c", "exit 3"], check=False).returncode == 3
    assert g.run(["cat"], input="piped").stdout == "piped"
    assert g.run(["sh", "-c", "echo $FOO $PATH"], env={"FOO": "bar"}).stdout.startswith(
        "bar /usr/local/sbin:")
    with pytest.raises(GuestError, match="timed out after 1s"):
        g.run(["sh", "-c", "sleep 300 & sleep 301"], timeout=1)
    assert g.run(["pgrep", "-f", "sleep 30[01]"], check=False).stdout == ""


def test_network_is_private(guest: Guest) -> None:
    port = _free_host_port(2368)
    links = guest.run(["ip", "-o", "link"]).stdout.strip().splitlines()
    assert len(links) == 1 and ": lo:" in links[0] and "UP" in links[0], links

    guest.run(["systemd-run", "--unit=e2e-web", "-p", "Type=exec", "/usr/bin/python3", "-m",
               "http.server", "--bind", "127.0.0.1", "--directory", "/tmp", str(port)])
    probe = ("import urllib.request as u; "
             f"print(u.urlopen('http://127.0.0.1:{port}/', timeout=2).status)")
    _wait_for(lambda: guest.run(["python3", "-c", probe], check=False).stdout.strip() == "200",
              10, "the server inside to answer")

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_network_false_shares_the_hosts_network(
        guest_factory: Callable[..., Guest]) -> None:
    g = guest_factory(network=False)
    port = _free_host_port(2369)
    g.run(["systemd-run", "--unit=e2e-web", "-p", "Type=exec", "/usr/bin/python3", "-m",
           "http.server", "--bind", "127.0.0.1", "--directory", "/tmp", str(port)])

    def answers() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    _wait_for(answers, 10, "the guest's server to answer the host")
    g.systemctl("stop", "e2e-web.service")


def test_binds_are_shared_the_rest_is_not(guest: Guest, tmp_path: Path) -> None:
    guest.run(["sh", "-c", f"echo from-guest > {tmp_path}/from-guest.txt"])
    assert (tmp_path / "from-guest.txt").read_text() == "from-guest\n"
    (tmp_path / "from-host.txt").write_text("from-host")  # after boot: still seen inside
    assert guest.run(["cat", str(tmp_path / "from-host.txt")]).stdout == "from-host"

    probe = f"/etc/ghostagent-e2e-probe-{uuid.uuid4().hex}"
    guest.write_file(probe, "inside only\n", mode=0o600)
    assert guest.run(["cat", probe]).stdout == "inside only\n"
    assert guest.run(["stat", "-c", "%a", probe]).stdout.strip() == "600"
    assert not Path(probe).exists()

    # A write through a symlink that points at a host path still lands in the overlay.
    guest.run(["ln", "-s", probe, "/etc/ghostagent-e2e-link"])
    guest.write_file("/etc/ghostagent-e2e-link", "via link\n")
    assert not Path(probe).exists()


def _guest_state(g: Guest) -> tuple[int, Path, int]:
    assert g.cgroup is not None
    return g.pid(), g.cgroup, os.stat(f"/proc/{g.pid()}/ns/mnt").st_ino


def _assert_gone(pid: int, cgroup: Path, mnt_ns: int) -> None:
    assert not Path(f"/proc/{pid}").exists(), f"guest systemd {pid} still running"
    assert not cgroup.exists(), f"cgroup {cgroup} left behind"
    assert _mnt_ns_holders(mnt_ns) == [], "processes still in the guest's mount namespace"


def test_shutdown_leaves_nothing(tmp_path: Path) -> None:
    ok, reason = guest_supported()
    if not ok:
        pytest.skip(reason)
    mounts_before = Path("/proc/self/mountinfo").read_text()
    g = Guest(tmp_path / "guest", binds=[tmp_path])
    with g:
        pid, cgroup, mnt_ns = _guest_state(g)
        g.run(["systemd-run", "--unit=e2e-sleeper", "/bin/sleep", "1000"])
        # A stray background process started outside systemd's control, too.
        g.run(["sh", "-c", "setsid sleep 1000 >/dev/null 2>&1 < /dev/null &"])
        _wait_for(lambda: len(g.run(["pgrep", "-x", "sleep"], check=False).stdout.split()) == 2,
                  5, "both sleepers")
        assert any(p.read_text().strip() for p in cgroup.rglob("cgroup.procs"))
    _assert_gone(pid, cgroup, mnt_ns)
    assert Path("/proc/self/mountinfo").read_text() == mounts_before
    assert g.shutdown_how == "poweroff"
    g.shutdown()  # idempotent
    with pytest.raises(GuestError):
        g.run(["true"])


def test_exception_inside_with_still_cleans_up(tmp_path: Path) -> None:
    ok, reason = guest_supported()
    if not ok:
        pytest.skip(reason)
    mounts_before = Path("/proc/self/mountinfo").read_text()
    state = None
    with pytest.raises(RuntimeError, match="deliberate"):
        with Guest(tmp_path / "guest") as g:
            state = _guest_state(g)
            raise RuntimeError("deliberate")
    assert state is not None
    _assert_gone(*state)
    assert Path("/proc/self/mountinfo").read_text() == mounts_before


_CRASHER = textwrap.dedent("""\
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from tests.e2e.guest import Guest
    g = Guest(sys.argv[2]).boot()
    print(g.pid(), g.cgroup, flush=True)
    time.sleep(600)
    """)


def test_killed_test_process_takes_its_guest_along(tmp_path: Path) -> None:
    ok, reason = guest_supported()
    if not ok:
        pytest.skip(reason)
    crasher = subprocess.Popen(
        [sys.executable, "-c", _CRASHER, str(_REPO_ROOT), str(tmp_path / "guest")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        line = crasher.stdout.readline() if crasher.stdout else ""
        assert line, "the crashing process did not boot its guest"
        pid_s, cgroup_s = line.split()
        pid, cgroup = int(pid_s), Path(cgroup_s)
        mnt_ns = os.stat(f"/proc/{pid}/ns/mnt").st_ino
        crasher.send_signal(signal.SIGKILL)
        crasher.wait(timeout=10)
    finally:
        if crasher.poll() is None:
            crasher.kill()
            crasher.wait()
        if crasher.stdout:
            crasher.stdout.close()
    # The parent-death signals take the whole guest down...
    _wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, "the orphaned guest to die")
    _wait_for(lambda: not _mnt_ns_holders(mnt_ns), 10, "its mount namespace to empty")
    # ...and the next run removes the empty cgroup it left.
    assert cgroup.exists()
    assert str(cgroup) in cleanup_leftovers()
    _assert_gone(pid, cgroup, mnt_ns)
