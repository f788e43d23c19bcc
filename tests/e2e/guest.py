"""A real systemd, booted as PID 1 of fresh namespaces, for end-to-end tests.

    with Guest(tmp_path / "guest", binds=[tmp_path]) as g:   # boots
        g.install_unit("x.service", "[Service]\\nExecStart=/bin/sleep 100\\n")
        g.systemctl("start", "x.service")
        print(g.journal("x.service"))
                                                             # shut down, nothing left behind

How it keeps the host untouched (see tests/e2e/guest-init.sh for the inside half):

* The guest runs in new mount, PID, UTS, IPC and cgroup namespaces (and, by default, a new
  network namespace with only `lo`), on an overlay of the host's `/` whose upper layer is a
  tmpfs. Only the directories in `binds` are the host's, read-write, at the same paths.
  `root=` boots another root file system the same way (a Debian rootfs made by
  tests/e2e/debootstrap.py): the overlay's lower layer is that directory instead of `/`.
* Its systemd boots a tiny target that only pulls basic.target; units that would touch the
  host (getty, ssh, postgresql, timers, sysctl, module loading, /tmp clean-up, ...) are
  masked; capabilities such as CAP_SYS_MODULE/SYS_TIME/SYS_RAWIO/NET_ADMIN are dropped.
* Every mount lives in the guest's private mount namespace and disappears with its last
  process. All its processes live in a dedicated cgroup v2 directory
  (`<cgroup2>/<name>.<owner pid>.<n>`) that shutdown() kills and removes.
* If the test process dies without cleaning up (SIGKILL), the kernel kills the guest too
  (parent-death signal on `unshare`, which `--kill-child`s the guest's PID 1); the empty
  cgroup directory left behind is removed by the next Guest() of a later run.

The guest dies with the *thread* that booted it (PR_SET_PDEATHSIG): boot it from the test's
thread, not from a short-lived worker thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["Guest", "GuestError", "guest_supported", "MASKED_UNITS", "GUEST_PATH"]

_HERE = Path(__file__).resolve().parent
_INIT_SCRIPT = _HERE / "guest-init.sh"
_SYSTEMD = Path("/lib/systemd/systemd")

#: PATH inside the guest for run() (no pyenv shims: /usr/bin/python3 is the system's).
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: The guest's only target: Requires/After basic.target.
GUEST_TARGET = "ghostagent-e2e.target"

#: Units masked inside the guest (symlinked to /dev/null in the overlay): anything that would
#: touch the host (kernel-wide settings, clock, entropy, host services, consoles) or only slow
#: the boot. The /tmp clean-up rule (tmpfiles.d/tmp.conf) is masked as well.
MASKED_UNITS: tuple[str, ...] = (
    # consoles and logins
    "getty.target", "getty@.service", "serial-getty@.service", "console-getty.service",
    "container-getty@.service", "systemd-logind.service", "systemd-user-sessions.service",
    # host services present on the machine
    "postgresql.service", "postgresql@.service", "ssh.service", "ssh.socket", "sshd.service",
    "cron.service", "avahi-daemon.service", "avahi-daemon.socket",
    "e2scrub_reap.service", "e2scrub@.service", "e2scrub_all.service",
    "e2scrub_fail@.service", "remote-fs.target",
    # timers (and what they start)
    "apt-daily.timer", "apt-daily-upgrade.timer", "apt-daily.service",
    "apt-daily-upgrade.service", "dpkg-db-backup.timer", "dpkg-db-backup.service",
    "e2scrub_all.timer", "fstrim.timer", "fstrim.service", "man-db.timer", "man-db.service",
    "systemd-tmpfiles-clean.timer", "systemd-tmpfiles-clean.service",
    # network and time: host-wide or not ours
    "systemd-networkd.service", "systemd-networkd.socket",
    "systemd-networkd-wait-online.service", "systemd-resolved.service",
    "systemd-timesyncd.service", "systemd-time-wait-sync.service",
    # kernel-wide state: sysctls, modules, binfmt, entropy, pstore, hugepages, debugfs
    "systemd-sysctl.service", "systemd-modules-load.service", "kmod-static-nodes.service",
    "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount", "systemd-random-seed.service", "systemd-pstore.service",
    "dev-hugepages.mount", "sys-kernel-config.mount", "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount", "sys-fs-fuse-connections.mount",
    # devices: udev must never run against the host's /sys
    "systemd-udevd.service", "systemd-udevd-control.socket", "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service", "systemd-udev-settle.service",
    "systemd-hwdb-update.service",
    # first-boot, disk and TPM machinery
    "systemd-firstboot.service", "systemd-repart.service", "systemd-machine-id-commit.service",
    "systemd-pcrphase.service", "systemd-pcrphase-sysinit.service",
    "cryptsetup.target", "integritysetup.target", "veritysetup.target",
    "systemd-ask-password-console.path", "systemd-ask-password-wall.path",
    "systemd-initctl.socket", "systemd-journald-audit.socket",
)

#: Capabilities removed from the guest's bounding set (setpriv syntax).
DROPPED_CAPS: tuple[str, ...] = (
    "sys_module", "sys_rawio", "sys_time", "net_admin", "syslog", "sys_pacct",
    "mac_admin", "mac_override", "audit_control", "audit_read", "wake_alarm", "block_suspend",
    "sys_tty_config", "lease", "linux_immutable", "bpf", "perfmon",
)

_BASE_ENV = {
    "PATH": GUEST_PATH,
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
}

_counter = 0


class GuestError(RuntimeError):
    """A guest could not boot, a command inside failed, or clean-up did not complete."""


# ---------------------------------------------------------------------------------------------
# host-side helpers


def _cgroup2_mount() -> Path | None:
    """Mount point of the cgroup v2 hierarchy (/sys/fs/cgroup or /sys/fs/cgroup/unified)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        sep = fields.index("-")
        if fields[sep + 1] == "cgroup2":
            return Path(fields[4])
    return None


def _cgroup_base() -> Path | None:
    """Where guests' cgroups are made: the cgroup2 directory this process itself belongs to."""
    mount = _cgroup2_mount()
    if mount is None:
        return None
    own = "/"
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                own = line[3:].strip() or "/"
    base = mount / own.lstrip("/")
    return base if base.is_dir() else mount


def guest_supported() -> tuple[bool, str]:
    """Can this machine boot a Guest? (ok, reason-when-not)."""
    if not Path("/proc/self/ns/pid").exists():
        return False, "not Linux / no namespaces"
    if os.geteuid() != 0:
        return False, "needs root (namespaces, overlay, cgroups)"
    if not _SYSTEMD.exists():
        return False, f"{_SYSTEMD} not installed"
    for tool in ("unshare", "nsenter", "setpriv", "ip", "pivot_root", "mount", "umount"):
        if shutil.which(tool) is None:
            return False, f"`{tool}` not found on PATH"
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError as exc:
        return False, f"cannot read /proc/filesystems: {exc}"
    if "overlay" not in filesystems:
        return False, "overlayfs not available"
    base = _cgroup_base()
    if base is None:
        return False, "no cgroup v2 hierarchy mounted"
    if not os.access(base, os.W_OK) or not (base / "cgroup.procs").exists():
        return False, f"cgroup v2 directory {base} is not writable"
    return True, ""


def _pid_alive(pid: int) -> bool:
    """True for a running process; False for none or a zombie (dead, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _cgroup_pids(cg: Path) -> list[int]:
    pids: list[int] = []
    for procs in [cg / "cgroup.procs", *cg.rglob("cgroup.procs")]:
        with contextlib.suppress(OSError, ValueError):
            pids.extend(int(x) for x in procs.read_text().split())
    return sorted(set(pids))


def _populated(cg: Path) -> bool:
    """Live processes in cg or below? (Zombies waiting for their parent do not count: they
    are listed in cgroup.procs but do not keep the cgroup from being removed.)"""
    try:
        events = (cg / "cgroup.events").read_text()
    except OSError:
        return bool(_cgroup_pids(cg))
    return "populated 1" in events


def _kill_cgroup(cg: Path, timeout: float = 10) -> None:
    """SIGKILL every process in cg (and below), wait until it is empty, rmdir it bottom-up."""
    if not cg.is_dir():
        return
    deadline = time.monotonic() + timeout
    while _populated(cg):
        if (cg / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (cg / "cgroup.kill").write_text("1")
        for pid in _cgroup_pids(cg):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise GuestError(f"processes left in {cg}: {_cgroup_pids(cg)}")
        time.sleep(0.05)
    # Remove the directories, deepest first (a cgroup dir is removable once it has no children
    # and no processes; its interface files do not count).
    dirs = sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                  reverse=True)
    for d in [*dirs, cg]:
        while True:
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:  # EBUSY for a moment after the last process died
                if time.monotonic() > deadline:
                    raise GuestError(f"cannot remove cgroup {d}: {exc}") from exc
                time.sleep(0.05)


def cleanup_leftovers(name: str = "ghostagent-e2e") -> list[str]:
    """Kill and remove guest cgroups left by earlier test processes that died (crash, SIGKILL).

    Their namespaces, and so their mounts, died with their processes. Returns what it removed.
    """
    base = _cgroup_base()
    if base is None or not base.is_dir():
        return []
    pattern = re.compile(re.escape(name) + r"\.(\d+)\.\d+")
    removed = []
    for cg in base.iterdir():
        m = pattern.fullmatch(cg.name)
        if not m or not cg.is_dir():
            continue
        owner = int(m.group(1))
        if owner == os.getpid() or _pid_alive(owner):
            continue
        _kill_cgroup(cg)
        removed.append(str(cg))
    return removed


# ---------------------------------------------------------------------------------------------


class Guest:
    """A systemd booted as PID 1 of its own namespaces over a throwaway overlay of `/`.

    Guest.timings collects (name, boot seconds, shutdown seconds) of every guest shut down in
    this process (the e2e conftest prints a summary).

    scratch: a host directory for this guest's own use (console log, overlay mount point); it
        must be somewhere nothing else uses (e.g. tmp_path / "guest").
    binds: host directories mounted read-write at the same path inside (the test's tmp dir, a
        Ghost build cache, the repo checkout...). Everything else the guest sees is the host's
        `/` as of boot, through an overlay whose writes stay in memory.
    name: hostname, `container=` value and cgroup prefix.
    network: True (default) gives the guest a private network namespace with only `lo` up, so
        127.0.0.1:2368 inside is not the host's; False shares the host's network.
    root: None (default) boots the host's `/`; a directory boots that root file system instead
        (e.g. a Debian rootfs made by tests/e2e/debootstrap.py, with its own systemd), through
        the same throwaway overlay: the directory itself is never written.
    """

    timings: list[tuple[str, float, float]] = []  # shared by all guests

    def __init__(self, scratch: Path, binds: Iterable[Path] = (), name: str = "ghostagent-e2e",
                 network: bool = True, root: Path | None = None) -> None:
        global _counter
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,40}", name):
            raise ValueError(f"bad guest name {name!r} (letters, digits, '-')")
        self.scratch = Path(scratch).resolve()
        self.binds = [Path(b).resolve() for b in binds]
        for b in self.binds:
            if not b.is_dir():
                raise ValueError(f"bind {b} is not an existing directory")
            if b == Path("/") or b.parts[1] in ("proc", "sys", "dev"):
                raise ValueError(f"cannot bind {b} into the guest")
        self.name = name
        self.network = network
        self.root = Path(root).resolve() if root is not None else None
        if self.root is not None and not (self.root / "lib/systemd/systemd").exists():
            raise ValueError(f"root {self.root} has no /lib/systemd/systemd to boot")
        _counter += 1
        base = _cgroup_base()
        self.cgroup: Path | None = (
            base / f"{name}.{os.getpid()}.{_counter}" if base is not None else None
        )
        self.console_log = self.scratch / "console.log"
        self._mountpoint = self.scratch / "layers"
        self._proc: subprocess.Popen[bytes] | None = None
        self._console = None
        self._pid: int | None = None
        self._down = False
        self.boot_seconds: float | None = None
        self.shutdown_seconds: float | None = None
        #: how shutdown() ended it: "poweroff", "SIGRTMIN+4", "SIGKILL", "not booted", ...
        self.shutdown_how = ""

    # -- life cycle ------------------------------------------------------------------------

    def boot(self, timeout: float = 30) -> Guest:
        """Start the guest; return once `systemctl is-system-running` says running/degraded."""
        if self._proc is not None:
            raise GuestError("guest already booted")
        ok, reason = guest_supported()
        if not ok:
            raise GuestError(f"cannot boot a guest here: {reason}")
        cleanup_leftovers(self.name)
        assert self.cgroup is not None
        self.scratch.mkdir(parents=True, exist_ok=True)
        self._mountpoint.mkdir(exist_ok=True)
        _kill_cgroup(self.cgroup)  # a leftover of a dead process that had our pid
        self.cgroup.mkdir()
        t0 = time.monotonic()
        self._console = open(self.console_log, "wb")  # closed by shutdown()
        ns = ["--mount", "--propagation", "private", "--pid", "--fork", "--kill-child=SIGKILL",
              "--uts", "--ipc", "--cgroup"]
        if self.network:
            ns.append("--net")
        argv = [
            "/bin/sh", "-c",
            # Join the guest's cgroup first, so the namespace's cgroup root is that directory
            # and everything the guest ever starts is in it; die with the booting thread.
            'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.cgroup),
            "setpriv", "--pdeathsig", "SIGKILL", "--",
            "unshare", *ns, "--",
            "/bin/sh", str(_INIT_SCRIPT), str(self._mountpoint), self.name,
            "1" if self.network else "0", GUEST_TARGET, " ".join(MASKED_UNITS),
            ",".join(f"-{c}" for c in DROPPED_CAPS),
            *(str(b) for b in self.binds),
        ]
        try:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=self._console, stderr=self._console,
                env={"PATH": GUEST_PATH, "LANG": "C.UTF-8",
                     **({"GHOSTAGENT_LOWERDIR": str(self.root)} if self.root else {})},
                start_new_session=True,
            )
            self._wait_booted(t0 + timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                self.shutdown(timeout=5)
            raise
        self.boot_seconds = time.monotonic() - t0
        return self

    def _fail(self, what: str) -> GuestError:
        return GuestError(f"{what}\n--- guest console ({self.console_log}) ---\n"
                          f"{self._console_tail()}")

    def _console_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.console_log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no console log)"

    def _wait_booted(self, deadline: float) -> None:
        assert self._proc is not None
        # 1. the guest's PID 1 (child of `unshare`) must have exec'd systemd
        while self._pid is None:
            if self._proc.poll() is not None:
                raise self._fail(f"guest exited during setup (rc {self._proc.returncode})")
            pid = self._systemd_child()
            if pid is not None:
                self._pid = pid
                break
            if time.monotonic() > deadline:
                raise self._fail("guest systemd did not start")
            time.sleep(0.02)
        # 2. its manager must reach the target
        state = ""
        while True:
            if self._proc.poll() is not None:
                raise self._fail(f"guest exited while booting (rc {self._proc.returncode})")
            r = self._nsenter(["systemctl", "is-system-running"], timeout=10, check=False)
            state = r.stdout.strip()
            if state in ("running", "degraded"):
                return
            if time.monotonic() > deadline:
                jobs = self._nsenter(["systemctl", "list-jobs", "--no-legend"], timeout=10,
                                     check=False).stdout
                raise self._fail(f"guest did not finish booting: state {state!r}; jobs:\n{jobs}")
            time.sleep(0.05)

    def _systemd_child(self) -> int | None:
        """Host pid of the guest's PID 1 once it runs systemd, else None."""
        assert self._proc is not None
        # The shell exec'd setpriv which exec'd unshare: self._proc.pid is `unshare`.
        try:
            children = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children").read_text()
        except OSError:
            return None
        for c in children.split():
            try:
                exe = os.readlink(f"/proc/{c}/exe")
            except OSError:
                continue
            if exe.endswith("/systemd"):
                return int(c)
        return None

    def pid(self) -> int:
        """Host pid of the guest's systemd."""
        if self._pid is None:
            raise GuestError("guest not booted")
        return self._pid

    def shutdown(self, timeout: float = 30) -> None:
        """Power off; escalate to SIGRTMIN+4 then SIGKILL; remove the cgroup. Idempotent.

        Mounts need no unmounting: they all live in the guest's mount namespace, which the
        kernel frees with its last process.
        """
        if self._down:
            return
        self._down = True
        t0 = time.monotonic()
        errors: list[str] = []
        proc = self._proc
        self.shutdown_how = "not booted" if proc is None else "had exited by itself"
        try:
            if proc is not None and proc.poll() is None:
                deadline = t0 + timeout
                if self._pid is not None:
                    self.shutdown_how = "poweroff"
                    with contextlib.suppress(Exception):
                        self._nsenter(["systemctl", "poweroff", "--no-block"], timeout=10,
                                      check=False)
                    if not self._wait_exit(proc, min(deadline, time.monotonic() + timeout * 0.7)):
                        self.shutdown_how = "SIGRTMIN+4"
                        with contextlib.suppress(OSError):
                            os.kill(self._pid, signal.SIGRTMIN + 4)
                        self._wait_exit(proc, deadline)
                if proc.poll() is None:
                    self.shutdown_how = "SIGKILL"
                    errors.append("guest did not power off in time: killed")
                    pid = self._pid or self._systemd_child()
                    if pid is not None:
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGKILL)  # kills the whole PID namespace
                    with contextlib.suppress(OSError):
                        proc.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=10)
        finally:
            try:
                if self.cgroup is not None:
                    _kill_cgroup(self.cgroup)
            except GuestError as exc:
                errors.append(str(exc))
            if self._proc is not None and self._proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=5)
            if self._console is not None:
                self._console.close()
            with contextlib.suppress(OSError):
                self._mountpoint.rmdir()
            self.shutdown_seconds = time.monotonic() - t0
            if self.boot_seconds is not None:
                Guest.timings.append((self.name, self.boot_seconds, self.shutdown_seconds))
        # A guest that had to be killed is not an error for the test using it; a guest whose
        # processes or cgroup could not be removed is.
        hard = [e for e in errors if not e.startswith("guest did not power off")]
        if hard:
            raise GuestError("; ".join(hard))

    @staticmethod
    def _wait_exit(proc: subprocess.Popen[bytes], deadline: float) -> bool:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        return proc.poll() is not None

    def __enter__(self) -> Guest:
        if self._proc is None:
            self.boot()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- inside the guest ------------------------------------------------------------------

    def _nsenter(self, argv: Sequence[str], timeout: float, check: bool,
                 input: str | None = None, env: dict[str, str] | None = None,
                 ) -> subprocess.CompletedProcess[str]:
        pid = self.pid()
        spaces = ["-m", "-u", "-i", "-p", "-C"] + (["-n"] if self.network else [])
        cmd = ["nsenter", "-t", str(pid), *spaces, "-r", "-w", "--", *argv]
        # Own process group: on timeout the whole group (nsenter, the command inside the guest
        # and its non-daemonised children) is killed, not just nsenter.
        with subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**_BASE_ENV, **(env or {})}, start_new_session=True,
        ) as proc:
            try:
                out, err = proc.communicate(input, timeout=timeout)
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                out, err = "", ""
                with contextlib.suppress(subprocess.TimeoutExpired, ValueError, OSError):
                    out, err = proc.communicate(timeout=5)
                if isinstance(exc, subprocess.TimeoutExpired):
                    raise GuestError(
                        f"timed out after {timeout}s inside the guest: {list(argv)}\n"
                        f"stdout: {out}\nstderr: {err}"
                    ) from exc
                raise
        r = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
        if check and r.returncode != 0:
            raise GuestError(
                f"exit {r.returncode} inside the guest: {list(argv)}\n"
                f"stdout: {r.stdout}\nstderr: {r.stderr}"
            )
        return r

    def run(self, argv: list[str], timeout: float = 60, check: bool = True,
            input: str | None = None, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the guest (its mount, PID, UTS, IPC, cgroup and network namespaces,
        its root and `/` as cwd), as root, with a clean environment (PATH without pyenv, HOME,
        LANG=C.UTF-8, no pager, no colours) plus env. Text mode, output captured. Raises
        GuestError (stdout and stderr in the message) on timeout, or if check and rc != 0.

        A background process started this way lives in the guest's PID namespace and dies
        with the guest at the latest.
        """
        if self._down:
            raise GuestError("guest is shut down")
        return self._nsenter(argv, timeout=timeout, check=check, input=input, env=env)

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60,
                  ) -> subprocess.CompletedProcess[str]:
        """`systemctl --no-pager ARGS` inside the guest."""
        return self.run(["systemctl", "--no-pager", *args], check=check, timeout=timeout)

    def journal(self, unit: str, lines: int = 200) -> str:
        """The last `lines` journal lines of `unit` inside the guest (journalctl -u)."""
        return self.run(["journalctl", "--no-pager", "-q", "-o", "short-precise", "-u", unit,
                         "-n", str(lines)], check=False).stdout

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file INSIDE the guest (parents created). Goes through a process inside the
        guest, so symlinks resolve in the guest's tree, never the host's."""
        if not path.startswith("/"):
            raise ValueError(f"path must be absolute: {path}")
        self.run(["/bin/sh", "-c",
                  'umask 022 && mkdir -p -- "$(dirname -- "$1")" && cat > "$1" '
                  '&& chmod "$2" -- "$1"',
                  "sh", path, f"{mode:o}"], input=text)

    def install_unit(self, name: str, text: str) -> None:
        """Write /etc/systemd/system/<name> inside the guest and daemon-reload."""
        if "/" in name:
            raise ValueError(f"bad unit name {name!r}")
        self.write_file(f"/etc/systemd/system/{name}", text)
        self.systemctl("daemon-reload")


