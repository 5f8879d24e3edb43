"""``up``, ``down`` and ``status``: the stack of ``run`` as a background process.

``up`` starts ``python -m freshet.devstack run`` detached (output in ``logs/devstack.log``) and
returns once that process reports itself ready in ``stack.json``. ``down`` sends it SIGTERM and
waits. All three are safe to repeat. When the ``run`` process was killed without stopping its
children, ``down`` stops the children it recorded (only processes whose pid and start time both
still match, so a reused pid is never hit).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from freshet.devstack.config import DevstackSettings
from freshet.devstack.stack import port_in_use
from freshet.devstack.state import StateDir, pid_alive, process_start_time, terminate_and_wait
from freshet.devstack.summary import render_summary
from freshet.devstack.supervisor import check_health, indent, log_tail

UP_TIMEOUT_S = 600.0
DOWN_TIMEOUT_S = 60.0
FOOTER = "`make down` stops it, `make status` shows it; its output: {log}"

Say = Callable[[str], None]


def _say(text: str) -> None:
    print(text, flush=True)


def live_health(data: dict[str, Any]) -> dict[str, str]:
    """The current state of each component of ``data``: its /health, or whether it listens."""
    result = {}
    for comp in data.get("components", []):
        url = comp.get("health_url")
        if url:
            code, _ = check_health(str(url))
            result[comp["name"]] = (
                "healthy"
                if code == 200
                else (f"HTTP {code}" if code is not None else "not answering")
            )
        else:
            port = comp.get("port")
            result[comp["name"]] = "listening" if port and port_in_use(int(port)) else "down"
    return result


def up(settings: DevstackSettings, say: Say = _say) -> int:
    """Start the stack in the background unless it runs; print its summary once it is ready."""
    state = StateDir(settings.state_dir)
    pid = state.running_pid()
    if pid is not None:
        data = state.read_stack() or {"pid": pid}
        say(f"the devstack is already running (pid {pid})")
        say(render_summary(data, live_health(data), FOOTER.format(log=_log_name(state))))
        return 0
    state.create()
    log_path = state.log("devstack")
    since = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "freshet.devstack", "run"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    say(
        f"starting the devstack in the background (pid {proc.pid}, output in "
        f"{state.display(log_path)}) ..."
    )
    deadline = time.monotonic() + UP_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                say(
                    f"the devstack exited with code {code}. End of {state.display(log_path)}:\n"
                    f"{indent(log_tail(log_path, 30, since))}"
                )
                return 1
            ready = state.read_stack()
            if ready is not None and ready.get("pid") == proc.pid and ready.get("ready"):
                say(render_summary(ready, live_health(ready), FOOTER.format(log=_log_name(state))))
                return 0
            time.sleep(0.5)
    except KeyboardInterrupt:
        say(f"\nstill starting in the background (pid {proc.pid}); `make down` stops it")
        return 130
    say(
        f"the devstack did not get ready within {UP_TIMEOUT_S:.0f}s; stopping it. "
        f"End of {state.display(log_path)}:\n{indent(log_tail(log_path, 30, since))}"
    )
    terminate_and_wait(proc.pid, DOWN_TIMEOUT_S)
    return 1


def _log_name(state: StateDir) -> str:
    return state.display(state.log("devstack"))


def down(settings: DevstackSettings, say: Say = _say) -> int:
    """Stop the running stack (SIGTERM, up to 60 s, then SIGKILL); a no-op when none runs."""
    state = StateDir(settings.state_dir)
    pid = state.running_pid()
    if pid is None:
        leftovers = _stop_leftovers(state, say)
        state.pid_file.unlink(missing_ok=True)
        state.stack_file.unlink(missing_ok=True)
        if not leftovers:
            say("the devstack is not running")
        return 0
    say(f"stopping the devstack (pid {pid}) ...")
    if not terminate_and_wait(pid, DOWN_TIMEOUT_S):
        say(f"it did not stop within {DOWN_TIMEOUT_S:.0f}s: killing it and what it started")
        terminate_and_wait(pid, 10, signal.SIGKILL)
        _stop_leftovers(state, say)
    state.pid_file.unlink(missing_ok=True)
    state.stack_file.unlink(missing_ok=True)
    say("stopped")
    return 0


def _stop_leftovers(state: StateDir, say: Say) -> bool:
    """Stop the components a dead ``run`` left behind. Returns whether there were any."""
    data = state.read_stack()
    if data is None:
        return False
    found = False
    for comp in reversed(data.get("components", [])):
        pid, started = comp.get("pid"), comp.get("started")
        if not pid or started is None or not pid_alive(int(pid)):
            continue
        if process_start_time(int(pid)) != started:
            continue
        found = True
        say(f"stopping {comp['name']} (pid {pid}), left behind by a devstack that died")
        if not terminate_and_wait(int(pid), 30, int(comp.get("stop_signal", signal.SIGTERM))):
            terminate_and_wait(int(pid), 10, signal.SIGKILL)
    return found


def status(settings: DevstackSettings, say: Say = _say) -> int:
    """Print what runs and each component's health (exit code 0 either way)."""
    state = StateDir(settings.state_dir)
    pid = state.running_pid()
    data = state.read_stack()
    if pid is None:
        say("the devstack is not running (`make run` or `make up` starts it)")
        return 0
    if data is None or data.get("pid") != pid or not data.get("ready"):
        say(f"the devstack is starting (pid {pid}); see {_log_name(state)} or its terminal")
        return 0
    say(render_summary(data, live_health(data)))
    return 0
