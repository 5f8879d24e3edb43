"""Child processes of the developer stack, and the loop that restarts the ones that die.

A :class:`Child` is one service process with its log file. The :class:`Supervisor` is polled by
the stack's main loop: it reports a child that exited on its own (with the end of its log) and
starts it again after a delay that doubles with every failure in a row, up to a maximum. A child
that ran for ``stable_after_s`` before it died starts again after the first delay.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

TAIL_LINES = 20


def log_tail(path: Path, lines: int = TAIL_LINES, since: int = 0) -> str:
    """The last ``lines`` lines of a log file after byte ``since`` ('' when there are none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(since, size - 16384))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def describe_exit(code: int) -> str:
    """``exited with code N``, or ``was killed by SIGNAME`` for a negative Popen return code."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def indent(text: str, prefix: str = "    | ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


class Child:
    """One service process, started with its own session and its output appended to a log.

    The child does not share the terminal's process group, so Ctrl-C reaches only the stack,
    which then stops its children in order.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        port: int | None = None,
        health_url: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.health_url = health_url
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        """Start the process (again); the previous one, if any, must have exited."""
        if self.alive():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self._close_log()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop() or the next start()
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM) without waiting."""
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        self.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._close_log()
        return self.proc.returncode

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def check_health(url: str, timeout: float = 2.0) -> tuple[int | None, str]:
    """GET ``url``: the HTTP status (``None`` if nothing answered) and a short detail."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - http://127.0.0.1 only
            return int(resp.status), resp.read(200).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(200).decode(errors="replace")
    except (OSError, ValueError) as exc:
        return None, str(getattr(exc, "reason", exc))


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    detail: str


def wait_healthy(child: Child, timeout: float, stop: threading.Event | None = None) -> HealthResult:
    """Poll the child's ``/health`` until it answers 200, the child exits, or time runs out."""
    if child.health_url is None:
        return HealthResult(child.alive(), "running" if child.alive() else "exited")
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            return HealthResult(False, "interrupted")
        code = child.returncode()
        if code is not None:
            return HealthResult(False, describe_exit(code))
        status, detail = check_health(child.health_url, timeout=2.0)
        if status == 200:
            return HealthResult(True, "healthy")
        last = f"HTTP {status}: {detail.strip()}" if status is not None else detail
        time.sleep(0.25)
    return HealthResult(False, f"not healthy within {timeout:.0f}s (last: {last})")


@dataclass
class _Restart:
    started_at: float = 0.0
    failures: int = 0
    due: float | None = None


class Supervisor:
    """Restarts children that exit while the stack runs, with a doubling delay.

    Call :meth:`check` regularly from one thread. Children that were never started, or that are
    being stopped with :meth:`stop_all`, are left alone.
    """

    def __init__(
        self,
        children: Sequence[Child],
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
        stable_after_s: float = 60.0,
        report: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.children = list(children)
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._stable_after_s = stable_after_s
        self._report = report
        self._clock = clock
        self._restarts = {c.name: _Restart() for c in self.children}
        self._stopping = False
        self.restart_count = dict.fromkeys(self._restarts, 0)

    def start_all(self) -> None:
        """Start every child, in order (without waiting for any of them to be healthy)."""
        for child in self.children:
            child.start()
            self._restarts[child.name].started_at = self._clock()

    def check(self) -> None:
        """Report children that died since the last call and restart those whose delay is over."""
        if self._stopping:
            return
        now = self._clock()
        for child in self.children:
            state = self._restarts[child.name]
            if state.due is not None:
                if now >= state.due:
                    state.due = None
                    self._restart(child)
                continue
            code = child.returncode()
            if child.proc is None or code is None:
                continue
            if now - state.started_at >= self._stable_after_s:
                state.failures = 0
            state.failures += 1
            delay = min(self._backoff_s * 2 ** (state.failures - 1), self._backoff_max_s)
            state.due = now + delay
            message = (
                f"{child.name} (pid {child.pid}) {describe_exit(code)}; restarting in {delay:g}s"
            )
            if state.failures == 1:
                tail = log_tail(child.log_path)
                message += f". End of {child.log_path}:\n{indent(tail)}" if tail else ""
            else:
                message += f" (failure {state.failures} in a row, see {child.log_path})"
            self._report(message)

    def _restart(self, child: Child) -> None:
        self._restarts[child.name].started_at = self._clock()
        try:
            child.start()
        except OSError as exc:
            self._report(f"cannot restart {child.name}: {exc}")
            return
        self.restart_count[child.name] += 1
        self._report(f"restarted {child.name} (pid {child.pid})")

    def stop_all(self, timeout: float = 15.0) -> dict[str, int | None]:
        """Stop every child: SIGTERM to all at once (last started first), then wait for each."""
        self._stopping = True
        ordered = list(reversed(self.children))
        for child in ordered:
            child.terminate()
        return {child.name: child.stop(timeout) for child in ordered}
