"""The devstack's supervisor restarts a service process that dies, with a doubling delay."""

from __future__ import annotations

import os
import signal
import sys
import time

from freshet.devstack.supervisor import Child, Supervisor, describe_exit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _child(tmp_path, name: str, code: str) -> Child:
    return Child(name, [sys.executable, "-c", code], dict(os.environ), tmp_path / f"{name}.log")


def _wait_exit(child: Child, timeout: float = 15) -> None:
    assert child.proc is not None
    child.proc.wait(timeout)


def test_a_crashing_child_is_reported_and_restarted_with_doubling_delays(tmp_path):
    clock = FakeClock()
    messages: list[str] = []
    crasher = _child(tmp_path, "crasher", "import sys; print('boom: no broker'); sys.exit(3)")
    sup = Supervisor(
        [crasher],
        backoff_s=1,
        backoff_max_s=4,
        stable_after_s=60,
        report=messages.append,
        clock=clock,
    )
    sup.start_all()
    delays = []
    for _ in range(5):
        _wait_exit(crasher)
        sup.check()
        message = messages[-1]
        assert "exited with code 3" in message
        delay = int(message.split("restarting in ")[1].split("s")[0])
        delays.append(delay)
        clock.now += delay - 0.5
        sup.check()
        assert sup.restart_count["crasher"] == len(delays) - 1, "restarted before its delay"
        clock.now += 0.5
        sup.check()
        assert sup.restart_count["crasher"] == len(delays)
    assert delays == [1, 2, 4, 4, 4]
    assert "boom: no broker" in messages[0], "the first report shows the end of the log"
    # A child that ran longer than stable_after_s starts again after the first delay.
    _wait_exit(crasher)
    clock.now += 120
    sup.check()
    assert "restarting in 1s" in messages[-1]
    sup.stop_all()


def test_a_killed_child_comes_back_and_stop_all_stops_for_good(tmp_path):
    messages: list[str] = []
    sleeper = _child(tmp_path, "sleeper", "import time; time.sleep(600)")
    sup = Supervisor([sleeper], backoff_s=0.1, report=messages.append)
    sup.start_all()
    first = sleeper.pid
    assert sleeper.proc is not None
    sleeper.proc.kill()
    deadline = time.monotonic() + 15
    while sup.restart_count["sleeper"] == 0:
        assert time.monotonic() < deadline, messages
        sup.check()
        time.sleep(0.05)
    assert sleeper.alive() and sleeper.pid != first
    assert "was killed by SIGKILL" in messages[0]

    codes = sup.stop_all(timeout=5)
    assert codes == {"sleeper": -signal.SIGTERM}
    sup.check()
    assert not sleeper.alive()
    assert sup.restart_count["sleeper"] == 1


def test_describe_exit():
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(-15) == "was killed by SIGTERM"
