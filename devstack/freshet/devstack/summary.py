"""The text the stack prints once it runs: what runs where, where the key is, what to try.

Rendered from the status the ``run`` process writes (``stack.json``), so ``run``, ``up`` and
``status`` print the same thing.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from freshet.common import topics
from freshet.devstack import demo

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def python_cmd() -> str:
    """This interpreter, relative to the working directory when it lies below it."""
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(Path.cwd()))
    except ValueError:
        return str(exe)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  " + "  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def render_summary(data: dict[str, Any], health: dict[str, str], footer: str = "") -> str:
    """Describe the running stack of ``data`` (``stack.json``), with ``health`` by component."""
    rows = [["component", "port", "pid", "status", "log"]]
    for comp in data.get("components", []):
        name = str(comp.get("name"))
        rows.append(
            [
                name,
                str(comp.get("port") or "-"),
                str(comp.get("pid") or "-"),
                health.get(name, "running"),
                str(comp.get("log", "")),
            ]
        )
    rate = data.get("workload", {}).get("rate", 0)
    workload = f"{rate:g} tx/s on database {demo.DEMO_DATABASE}" if rate else "off"
    rows.append(["workload", "-", str(data.get("pid", "-")), workload, "(thread of the devstack)"])

    token = str(data.get("admin_token", ".freshet/admin-token"))
    token_expr = token if token.startswith("$") else f"$(cat {shlex.quote(token)})"
    ports = {c.get("name"): c.get("port") for c in data.get("components", [])}
    bootstrap = str(data.get("kafka_bootstrap", DEFAULT_BOOTSTRAP))
    orders_topic = topics.cdc_topic(demo.DEMO_SOURCE, "public", "orders")
    view_topic = topics.view_topic(demo.DEMO_VIEW)
    other = f" --bootstrap {bootstrap}" if bootstrap != DEFAULT_BOOTSTRAP else ""
    watch = f"{python_cmd()} -m freshet.devstack watch {orders_topic}{other}"
    watch_view = f"{python_cmd()} -m freshet.devstack watch {view_topic}{other}"
    control_url = f"http://127.0.0.1:{ports.get('control', 8700)}"
    control = f'curl -H "Authorization: Bearer {token_expr}" {control_url}'
    key_file = str(data.get("demo_key_file", ".freshet/demo-api-key"))
    serve_url = f"http://127.0.0.1:{ports.get('serve', 8701)}"
    serve = f'curl -sN -H "Authorization: Bearer $(cat {shlex.quote(key_file)})" \'{serve_url}'
    tries = [
        f"{control}/v1/sources/{demo.DEMO_SOURCE}",
        f"{watch}  (--from-end: only new changes)",
        f"{control}/v1/views/{demo.DEMO_VIEW}  (the view's status: state, applied, lag)",
        f"{watch_view}  (the view's rows, kept fresh)",
        f"curl http://127.0.0.1:{ports.get('serve', 8701)}/health",
        f"{serve}/v1/products/{demo.DEMO_PRODUCT}/rows?sort=-revenue&limit=5'  (the demo "
        "product over REST, with the demo API key)",
        f"{serve}/v1/products/{demo.DEMO_PRODUCT}/changes'  (its live changes, Server-Sent Events)",
        f"curl -s http://127.0.0.1:{ports.get('transform', 8703)}/metrics | head",
    ]
    state_dir = str(data.get("state_dir", ".freshet"))
    if shutil.which("psql"):
        tries.append(
            f'psql "postgresql://postgres:$(cat {shlex.quote(state_dir + "/pg-password")})'
            f'@127.0.0.1:{ports.get("postgresql", 5433)}/{demo.DEMO_DATABASE}"'
        )
    parts = [
        f"Freshet devstack is running (pid {data.get('pid')}, state in {state_dir}/)",
        "",
        _table(rows),
        "",
        f"Demo: {data.get('registration', '')}",
        f"      {data.get('view_registration', '')}",
        f"      {data.get('product_registration', '')}",
        f"Admin token: {token}",
        f"Demo API key (reads product {demo.DEMO_PRODUCT}): {key_file}",
        "",
        "Try:",
        *(f"  {line}" for line in tries),
    ]
    if footer:
        parts += ["", footer]
    return "\n".join(parts)
