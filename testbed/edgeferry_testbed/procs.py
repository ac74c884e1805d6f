"""Background processes the testbed owns: start, find again, stop, and nothing else.

Each process gets a log file under `.testbed/logs/` and a pid file under `.testbed/pids/` that
also records the executable path. `down` only signals a pid whose `/proc/<pid>/exe` still is that
executable, so a recycled pid, or a service somebody else started (a dockerd that already ran,
say), is never touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class TestbedError(RuntimeError):
    """A testbed step failed; the message says which and where its log is."""


@dataclasses.dataclass(frozen=True)
class Managed:
    """One process the testbed started."""

    name: str
    pid: int
    exe: str
    log: Path


class Supervisor:
    """Starts processes detached from the caller and finds them again in a later run."""

    def __init__(self, state_dir: Path) -> None:
        self.logs = state_dir / "logs"
        self.pids = state_dir / "pids"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pids.mkdir(parents=True, exist_ok=True)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Managed:
        """Start `argv` in its own session, so it outlives `make testbed-up` and `make demo`."""
        running = self.find(name)
        if running is not None:
            return running
        log = self.logs / f"{name}.log"
        exe = str(Path(argv[0]).resolve())
        with log.open("ab") as out:
            out.write(f"\n--- start {time.strftime('%H:%M:%S')}: {' '.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        managed = Managed(name=name, pid=proc.pid, exe=exe, log=log)
        (self.pids / f"{name}.json").write_text(
            json.dumps({"pid": proc.pid, "exe": exe, "argv": list(argv)})
        )
        return managed

    def find(self, name: str) -> Managed | None:
        """The process of that name if it still runs (same pid, same executable)."""
        record = self.pids / f"{name}.json"
        if not record.exists():
            return None
        data = json.loads(record.read_text())
        pid, exe = int(data["pid"]), str(data["exe"])
        if not _is_same_process(pid, exe):
            record.unlink(missing_ok=True)
            return None
        return Managed(name=name, pid=pid, exe=exe, log=self.logs / f"{name}.log")

    def all(self) -> list[Managed]:
        """Every recorded process that still runs."""
        found = [self.find(p.stem) for p in sorted(self.pids.glob("*.json"))]
        return [m for m in found if m is not None]

    def stop(self, name: str, *, grace: float = 10.0) -> bool:
        """SIGTERM, then SIGKILL after `grace` seconds; True if a process was stopped."""
        managed = self.find(name)
        if managed is None:
            return False
        _signal_group(managed.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _is_same_process(managed.pid, managed.exe):
            time.sleep(0.1)
        if _is_same_process(managed.pid, managed.exe):
            _signal_group(managed.pid, signal.SIGKILL)
            time.sleep(0.2)
        _reap(managed.pid)
        (self.pids / f"{name}.json").unlink(missing_ok=True)
        return True

    def kill(self, name: str) -> bool:
        """SIGKILL the process group at once, as a node failure or an OOM kill would.

        No SIGTERM first: reliability tests use it to crash the process mid-step. True if a
        process was killed.
        """
        managed = self.find(name)
        if managed is None:
            return False
        _signal_group(managed.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _is_same_process(managed.pid, managed.exe):
            _reap(managed.pid)
            time.sleep(0.05)
        (self.pids / f"{name}.json").unlink(missing_ok=True)
        return True

    def log_tail(self, name: str, lines: int = 20) -> str:
        """The last lines of a process' log, for error messages."""
        log = self.logs / f"{name}.log"
        if not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _is_same_process(pid: int, exe: str) -> bool:
    """Whether `pid` still runs `exe`. A tool rebuilt while it ran (its file replaced, so the
    kernel shows `<path> (deleted)`) is still the process we started and must still be stopped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            _reap(pid)
            return False
        return os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)") == exe
    except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
        return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our own child (no zombie left behind)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) != 0


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    on_timeout: Callable[[], str] | None = None,
    interval: float = 0.25,
) -> None:
    """Poll `check` until it holds, or raise a TestbedError naming `what` (and a log tail)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(interval)
    detail = on_timeout() if on_timeout else ""
    raise TestbedError(f"timed out after {timeout:.0f}s waiting for {what}\n{detail}".rstrip())


def http_ok(url: str, *, timeout: float = 2.0) -> bool:
    """Whether a plain-HTTP GET of `url` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= int(resp.status) < 300
    except (urllib.error.URLError, OSError):
        return False
