"""``learntrack stack up | down | status | logs``: the local stack as a whole.

Runs in the CLI process. ``up`` is idempotent: it starts only what is not running,
then returns once every server has answered a real driver round-trip. ``down`` stops
each server by its own PID with the signal that makes it flush, so nothing it
acknowledged is lost, and a later ``up`` finds the data again.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from dotenv import dotenv_values
from pydantic import SecretStr

from learntrack.config import ENV_PREFIX, Settings, credentials_path, get_settings
from learntrack.errors import PortInUseError, ServerStartError, StackError
from learntrack.stack import jars
from learntrack.stack.credentials import GENERATED, ensure_credentials
from learntrack.stack.process import (
    PidRecord,
    port_free,
    rss_bytes,
    stop_process,
    tail,
)
from learntrack.stack.servers import (
    ALL_SERVERS,
    CORE_SERVERS,
    SPARK_SERVERS,
    LocalServer,
)

Reporter = Callable[[str], None]


@dataclass(frozen=True)
class ServerStatus:
    """One row of ``stack status``."""

    name: str
    address: str
    pid: int | None
    rss_bytes: int | None
    healthy: bool
    version: str
    detail: str = ""


def server_names() -> list[str]:
    """Names of every server the stack can run."""
    return [cls.name for cls in ALL_SERVERS]


class Stack:
    """The local servers of one data directory."""

    def __init__(self, settings: Settings | None = None) -> None:
        """Use ``settings`` or build them (credentials file included)."""
        self.settings = settings or get_settings()

    def _reload(self) -> Settings:
        """Settings again, now that the credentials file exists.

        Keeps explicit overrides: only secrets that were unset are filled in.
        """
        generated = dotenv_values(credentials_path(self.settings.data_dir))
        merged = self.settings.model_copy(deep=True)
        for key in GENERATED:
            section_name, field_name = key.removeprefix(ENV_PREFIX).lower().split("__")
            section = getattr(merged, section_name)
            value = generated.get(key)
            if getattr(section, field_name) is None and value:
                setattr(section, field_name, SecretStr(value))
        return merged

    def _servers(self, classes: Iterable[type[LocalServer]]) -> list[LocalServer]:
        return [cls(self.settings) for cls in classes]

    def server(self, name: str) -> LocalServer:
        """The server called ``name``, or a StackError listing the valid names."""
        for cls in ALL_SERVERS:
            if cls.name == name:
                return cls(self.settings)
        msg = f"unknown server {name!r}: choose one of {', '.join(server_names())}"
        raise StackError(msg)

    @staticmethod
    def running(server: LocalServer) -> PidRecord | None:
        """The PID record of ``server`` if the very process we started still runs."""
        record = PidRecord.load(server.pid_path)
        return record if record is not None and record.alive() else None

    def all_running(self) -> bool:
        """Whether every core server of this data directory is running."""
        return all(self.running(s) is not None for s in self._servers(CORE_SERVERS))

    def _servers_running(self) -> list[LocalServer]:
        return [s for s in self._servers(ALL_SERVERS) if self.running(s) is not None]

    # -- up -------------------------------------------------------------------
    def up(
        self,
        *,
        spark_cluster: bool = False,
        only: Iterable[str] | None = None,
        report: Reporter = print,
    ) -> None:
        """Start every server not running; return when all answer their driver.

        ``only`` restricts the call to the named servers. Generates the credentials
        on the first call and rebuilds the settings so servers and clients agree.
        """
        ensure_credentials(self.settings.data_dir)
        self.settings = self._reload()
        classes = CORE_SERVERS + (SPARK_SERVERS if spark_cluster else ())
        if only is not None:
            wanted = set(only)
            for name in wanted:
                self.server(name)  # raises on an unknown name
            classes = tuple(c for c in ALL_SERVERS if c.name in wanted)
        servers = self._servers(classes)
        to_start = [s for s in servers if self.running(s) is None]
        self._check_ports(to_start)
        parts = [s.jvm_part for s in to_start if s.jvm_part is not None]
        jars.fetch(self.settings, parts, report=report)
        if spark_cluster:
            # The worker registers with the master: start the master first.
            ordered = [s for s in to_start if s.name != "spark-worker"]
            worker = [s for s in to_start if s.name == "spark-worker"]
        else:
            ordered, worker = to_start, []
        for server in ordered:
            self._spawn(server, report)
        first_wave = [s for s in servers if s not in worker]
        with ThreadPoolExecutor(max_workers=len(first_wave)) as pool:
            errors = [
                err
                for err in pool.map(lambda s: self._await_ready(s, report), first_wave)
                if err is not None
            ]
        for server in worker:
            self._spawn(server, report)
            err = self._await_ready(server, report)
            if err is not None:
                errors.append(err)
        if errors:
            raise ServerStartError("\n\n".join(errors))

    def _check_ports(self, servers: list[LocalServer]) -> None:
        for server in servers:
            for port, env_var in server.ports().items():
                if not port_free(port):
                    msg = (
                        f"port {port} needed by {server.name} is already in use by "
                        f"another process: stop it or set {env_var} to a free port"
                    )
                    raise PortInUseError(msg)

    def _spawn(self, server: LocalServer, report: Reporter) -> None:
        server.prepare()
        command = server.command()
        with server.log_path.open("ab") as log:
            log.write(
                f"\n=== learntrack: starting {server.name} at {time.ctime()}\n".encode()
            )
            log.flush()
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=server.dir,
                env=server.env(),
                start_new_session=True,  # survives the CLI; Ctrl-C doesn't reach it
            )
        # Give the kernel a moment to publish /proc/PID/stat.
        PidRecord.of(proc.pid).dump(server.pid_path)
        report(f"started {server.name} (pid {proc.pid})")

    def _await_ready(self, server: LocalServer, report: Reporter) -> str | None:
        """Wait for a driver round-trip; returns an error text instead of raising."""
        timeout = self.settings.stack.start_timeout_s
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        initialised = False
        while time.monotonic() < deadline:
            record = self.running(server)
            if record is None:
                return self._failure(server, "exited during start")
            try:
                if not initialised:
                    server.check()
                    server.after_ready()
                    initialised = True
                version = server.check()
            except Exception as err:  # noqa: BLE001 - any failure means "not yet"
                last = err
                time.sleep(0.5)
                continue
            report(f"{server.name} ready: {version}")
            return None
        return self._failure(server, f"did not answer within {timeout:.0f} s ({last})")

    @staticmethod
    def _failure(server: LocalServer, what: str) -> str:
        return (
            f"{server.name} {what}; last lines of {server.log_path}:\n"
            f"{tail(server.log_path, 25)}"
        )

    # -- down -----------------------------------------------------------------
    def down(self, report: Reporter = print) -> list[str]:
        """Stop every server we started (worker first), cleanly; returns their names."""
        stopped: list[str] = []
        for server in reversed(self._servers(ALL_SERVERS)):
            record = self.running(server)
            if record is None:
                server.pid_path.unlink(missing_ok=True)
                continue
            clean = stop_process(
                record, server.stop_signal, self.settings.stack.stop_timeout_s
            )
            server.pid_path.unlink(missing_ok=True)
            stopped.append(server.name)
            how = "stopped" if clean else "did not stop in time: killed"
            report(f"{server.name} (pid {record.pid}) {how}")
        return stopped

    # -- status / logs --------------------------------------------------------
    def status(self, *, include_spark: bool | None = None) -> list[ServerStatus]:
        """One row per server: version, address, PID, RSS, health.

        Spark rows are shown when asked for or when they run.
        """
        rows = []
        for server in self._servers(ALL_SERVERS):
            record = self.running(server)
            if isinstance(server, SPARK_SERVERS):
                if include_spark is False or (include_spark is None and record is None):
                    continue
            healthy, version, detail = False, "-", "not running"
            if record is not None:
                try:
                    version, healthy, detail = server.check(), True, ""
                except Exception as err:  # noqa: BLE001 - report, don't raise
                    detail = f"{type(err).__name__}: {err}"[:200]
            rows.append(
                ServerStatus(
                    name=server.name,
                    address=server.address(),
                    pid=record.pid if record else None,
                    rss_bytes=rss_bytes(record.pid) if record else None,
                    healthy=healthy,
                    version=version,
                    detail=detail,
                )
            )
        return rows

    def logs(self, name: str, lines: int = 50) -> str:
        """The last ``lines`` lines of a server's log."""
        server = self.server(name)
        if not server.log_path.exists():
            msg = f"{name} has no log yet at {server.log_path} (never started?)"
            raise StackError(msg)
        return tail(server.log_path, lines)
