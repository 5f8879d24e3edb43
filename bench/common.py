"""Helpers every benchmark uses: the machine, BENCHMARKS.md sections, processes, statistics."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import platform
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from freshet.devstack.config import EMBEDDED_TOPIC_PARTITIONS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "BENCHMARKS.md"
TITLE = "# Benchmarks"
INTRO = (
    "Results of `make bench` (or `make bench-<name>`), one section per benchmark; each run of a "
    "benchmark replaces what the last run wrote at the top of its own section, and keeps the "
    "notes and earlier runs below it. Every figure is measured in one run next to its baseline, "
    "on real servers started by the benchmark itself."
)


class BenchError(RuntimeError):
    """A benchmark could not run (a server did not start, a phase timed out, ...)."""


class Deadline:
    """The time budget of a whole benchmark; every wait takes the smaller of its own and this."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        return self._end - time.monotonic()

    def cap(self, seconds: float) -> float:
        left = self.left()
        if left <= 0:
            raise BenchError(f"the benchmark exceeded its budget of {self.seconds:.0f}s")
        return min(seconds, left)


# --- the machine -----------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_gib() -> float:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def nproc() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


def git_revision() -> str:
    """The commit checked out, and whether code differed from it (BENCHMARKS.md aside)."""
    try:
        rev = _git("rev-parse", "--short", "HEAD")
        changed = _git("status", "--porcelain", "-uno", "--", ".", ":!BENCHMARKS.md")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"`{rev}`" + (" plus uncommitted changes" if changed else "")


def machine_lines(extra: Sequence[tuple[str, str]] = ()) -> list[str]:
    """Markdown bullet lines describing where and when a benchmark ran."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"- Date: {now}; revision {git_revision()}",
        f"- Machine: {nproc()} CPUs ({cpu_model()}), {memory_gib():.1f} GiB RAM, "
        f"Linux {platform.release()}",
        f"- Python {platform.python_version()}",
    ]
    lines += [f"- {name}: {value}" for name, value in extra]
    return lines


# --- BENCHMARKS.md ---------------------------------------------------------------------------


KEPT = (
    "<!-- Above: written by the benchmark. Below: notes and earlier runs, kept when it runs "
    "again. -->"
)
"""The line that ends what a benchmark writes in its section; what follows it is kept."""


def replace_section(text: str, heading: str, body: str) -> str:
    """``text`` with the section under ``heading`` (to the next ``## `` heading) set to ``body``.

    What the old section held below its :data:`KEPT` line (verdicts, earlier runs) follows the
    new body. A missing section is appended; every other section stays as it was.
    """
    if not text.strip():
        text = f"{TITLE}\n\n{INTRO}\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip("\n") == heading), None)
    end = len(lines)
    kept = ""
    if start is not None:
        end = next((i for i in range(start + 1, end) if lines[i].startswith("## ")), end)
        old = "".join(lines[start + 1 : end])
        if KEPT in old:
            kept = old.split(KEPT, 1)[1].strip("\n")
    section = heading + "\n\n" + body.strip("\n") + "\n\n" + KEPT + "\n"
    if kept:
        section += "\n" + kept + "\n"
    if start is None:
        return text.rstrip("\n") + "\n\n" + section
    before = "".join(lines[:start])
    after = "".join(lines[end:])
    return before + section + ("\n" + after if after else "")


def write_section(heading: str, body: str, path: Path = RESULTS) -> None:
    old = path.read_text() if path.exists() else ""
    path.write_text(replace_section(old, heading, body))


# --- processes -------------------------------------------------------------------------------


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; the process (and its session) is gone after."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(10)


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (all its threads), in seconds; 0 if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process and all its live descendants, in seconds."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(raw[raw.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += cpu_seconds(current)
        todo.extend(children.get(current, ()))
    return total


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


# --- statistics ------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


PARTITIONS = EMBEDDED_TOPIC_PARTITIONS
"""Partitions per topic in every benchmark's stack: what ``make run`` gives the embedded broker."""


def partitions_phrase() -> str:
    """How the reports say it: "1 partition per topic, as `make run` has it"."""
    noun = "partition" if PARTITIONS == 1 else "partitions"
    return f"{PARTITIONS} {noun} per topic, as `make run` has it"


def fmt_int(value: float) -> str:
    return f"{value:,.0f}" if math.isfinite(value) else "n/a"


def fmt_ms(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


@dataclass(frozen=True)
class MachineCpu:
    """CPU jiffies of the whole machine so far (all CPUs), from /proc/stat."""

    total: int
    idle: int
    steal: int

    def busy_since(self, earlier: MachineCpu) -> float:
        """Share (0..1) of all CPU time that was busy (steal included) since ``earlier``."""
        total = self.total - earlier.total
        return 1 - (self.idle - earlier.idle) / total if total > 0 else float("nan")

    def cpu_seconds_since(self, earlier: MachineCpu) -> float:
        """CPU seconds every process of this machine used together since ``earlier``."""
        busy = (self.total - self.idle - self.steal) - (
            earlier.total - earlier.idle - earlier.steal
        )
        return busy / _TICK

    def steal_since(self, earlier: MachineCpu) -> float:
        """Share (0..1) of all CPU time the hypervisor gave to other guests since ``earlier``."""
        total = self.total - earlier.total
        return (self.steal - earlier.steal) / total if total > 0 else float("nan")


def machine_cpu() -> MachineCpu:
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return MachineCpu(0, 0, 0)
    # user nice system idle iowait irq softirq steal guest guest_nice (guest is in user)
    return MachineCpu(sum(fields[:8]), fields[3] + fields[4], fields[7])


def own_cpu_seconds() -> float:
    """User + system CPU time of this process (all threads)."""
    t = os.times()
    return t.user + t.system
