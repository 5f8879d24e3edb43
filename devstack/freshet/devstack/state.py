"""The stack's state directory (``.freshet/`` by default): keys, data, logs, pid and status.

Layout::

    .freshet/
      admin-token  secret-key  pg-password     generated once, mode 0600
      pg/data/     redis/     transform/     ingest-spool/
      logs/<component>.log    logs/devstack.log (make up)
      devstack.pid            pid of the running `python -m freshet.devstack run`
      stack.json              what runs (written by run; "ready": true once started)

The directory itself is mode 0755 so that the ``postgres`` account (PostgreSQL refuses to run as
root) can reach ``pg/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from freshet.common.secrets import SecretBox
from freshet.devstack.exceptions import DevstackError

PROCESS_MARKER = "freshet.devstack"


def process_cmdline(pid: int) -> str:
    """The command line of a running process ('' when there is none)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = _proc_state(pid)
    return state not in ("Z", "X")


def _proc_stat(pid: int) -> list[str]:
    """Fields 3 and on of ``/proc/<pid>/stat`` (after the command name), [] if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return stat.rsplit(")", 1)[-1].split()


def _proc_state(pid: int) -> str:
    fields = _proc_stat(pid)
    return fields[0] if fields else ""


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot: with the pid, names one process for good.

    A pid alone can be reused, and a command line can be rewritten (redis-server does).
    """
    fields = _proc_stat(pid)
    return int(fields[19]) if len(fields) > 19 else None


def terminate_and_wait(pid: int, timeout: float, sig: int = signal.SIGTERM) -> bool:
    """Send ``sig`` to ``pid`` and wait until it is gone. Returns whether it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.2)
    return not pid_alive(pid)


class StateDir:
    """Paths and files under the state directory; ``root`` is made absolute."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.logs = self.root / "logs"
        self.pg_data = self.root / "pg" / "data"
        self.redis_data = self.root / "redis"
        self.pid_file = self.root / "devstack.pid"
        self.stack_file = self.root / "stack.json"

    def create(self) -> None:
        """Create the directory tree (idempotent), reachable by the ``postgres`` account."""
        for path in (self.root, self.root / "pg"):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o755)
        self.logs.mkdir(exist_ok=True)

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def display(self, path: Path) -> str:
        """``path`` relative to the working directory when it lies below it."""
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    # --- secrets ------------------------------------------------------------------------------

    def secret(self, name: str, override: SecretStr, generate: Callable[[], str]) -> str:
        """The secret kept in file ``name``: ``override`` if set, else the file, else a new one.

        A generated secret is written with mode 0600 and reused by every later run.
        """
        if override.get_secret_value():
            return override.get_secret_value()
        path = self.root / name
        if path.exists():
            value = path.read_text().strip()
            if value:
                return value
        value = generate()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
        path.chmod(0o600)
        return value

    def admin_token(self, override: SecretStr) -> str:
        return self.secret("admin-token", override, lambda: secrets.token_urlsafe(32))

    def secret_key(self, override: SecretStr) -> str:
        return self.secret("secret-key", override, SecretBox.generate_key)

    def pg_password(self) -> str:
        """The PostgreSQL superuser's password, fixed when the cluster was first created."""
        path = self.root / "pg-password"
        if (self.pg_data / "PG_VERSION").exists() and not path.exists():
            raise DevstackError(
                f"{self.pg_data} exists but {path} is gone, so the database password is "
                f"unknown: remove {self.root / 'pg'} to start with a fresh demo database"
            )
        return self.secret("pg-password", SecretStr(""), lambda: secrets.token_urlsafe(24))

    # --- the running stack --------------------------------------------------------------------

    def running_pid(self) -> int | None:
        """The pid of the stack's ``run`` process if it is alive, else ``None``."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if pid_alive(pid) and PROCESS_MARKER in process_cmdline(pid):
            return pid
        return None

    def claim_pid(self, pid: int) -> None:
        self.pid_file.write_text(f"{pid}\n")

    def release_pid(self, pid: int) -> None:
        """Remove the pid file if it still names ``pid``."""
        with contextlib.suppress(OSError, ValueError):
            if int(self.pid_file.read_text().strip()) == pid:
                self.pid_file.unlink()

    def write_stack(self, status: dict[str, Any]) -> None:
        tmp = self.stack_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=2) + "\n")
        tmp.replace(self.stack_file)

    def read_stack(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.stack_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def clear_stack(self, pid: int) -> None:
        data = self.read_stack()
        if data is not None and data.get("pid") == pid:
            self.stack_file.unlink(missing_ok=True)
