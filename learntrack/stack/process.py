"""Process bookkeeping for the local stack: PID files, liveness, ports, logs.

Runs in the CLI process on the developer's machine (Linux: reads ``/proc``). A PID
file records the PID *and* the process start time, so a recycled PID is never taken
for one of our servers and we only ever signal processes we started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PidRecord:
    """A started server process: its PID and kernel start time (clock ticks)."""

    pid: int
    start_ticks: int

    def dump(self, path: Path) -> None:
        """Write the record atomically."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{self.pid} {self.start_ticks}\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> PidRecord | None:
        """Read a record, or None if absent or unreadable."""
        try:
            pid_s, ticks_s = path.read_text().split()
            return cls(int(pid_s), int(ticks_s))
        except (OSError, ValueError):
            return None

    @classmethod
    def of(cls, pid: int) -> PidRecord:
        """The record of a live process."""
        ticks = start_ticks(pid)
        if ticks is None:
            msg = f"process {pid} is not running"
            raise ProcessLookupError(msg)
        return cls(pid, ticks)

    def alive(self) -> bool:
        """Whether this very process (same PID, same start time) still runs."""
        return start_ticks(self.pid) == self.start_ticks


def start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, None if gone/zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces: split after its ')'.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z" and not _other_threads_running(pid):
        return None
    # A zombie main thread whose other threads still run (a JVM running its
    # shutdown hooks) is a process that has not stopped yet.
    return int(fields[19])


def _other_threads_running(pid: int) -> bool:
    try:
        tasks = [t for t in Path(f"/proc/{pid}/task").iterdir() if t.name != str(pid)]
    except OSError:
        return False
    return bool(tasks)


def rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` in bytes, None if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port`` (we can bind it right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
        return True
    return False


def stop_process(record: PidRecord, sig: int, timeout_s: float) -> bool:
    """Send ``sig`` to our process and wait for it to exit.

    Escalates to SIGKILL only after ``timeout_s``. Returns True if it stopped
    cleanly (before the escalation).
    """
    if not record.alive():
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, sig)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not record.alive():
            _reap(record.pid)
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGKILL)
    _reap(record.pid)
    return False


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (avoids zombies)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ('' if missing)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
