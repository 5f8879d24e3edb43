"""The pipeline CLI: YAML files validated and applied through the control API (a TestClient
stands in for HTTP; the API behind it is the real one on the real broker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from freshet.common import codec, topics
from freshet.common.pipelines import PipelineSpec
from freshet.common.schemas import ColumnSchema, TableSchema
from freshet.control.cli import UsageError, apply, load, main, validate

PIPELINE = """
name: {name}
nodes:
  - id: src
    kind: source
    source: {name}
    tables: [public.orders]
  - id: big
    kind: filter
    inputs: [src]
    where: |
      amount > 100
  - id: hide
    kind: mask
    inputs: [big]
    salt_env: TEST_SALT
    fields:
      email: {{method: hash}}
  - id: out
    kind: sink
    inputs: [hide]
    topic: {name}.big
"""


@pytest.fixture
def source(client, auth, source_body, publish, wait_for, unique) -> str:
    assert (
        client.post("/v1/sources", json=source_body(name=unique), headers=auth).status_code == 201
    )
    orders = TableSchema(
        source=unique,
        schema="public",
        table="orders",
        topic=topics.cdc_topic(unique, "public", "orders"),
        columns=(
            ColumnSchema(name="id", type_oid=23, type="integer"),
            ColumnSchema(name="amount", type_oid=1700, type="numeric"),
            ColumnSchema(name="email", type_oid=25, type="text"),
        ),
        primary_key=("id",),
    )
    publish(topics.SCHEMAS, orders.qualified, orders)
    wait_for(lambda: orders.qualified in {t.qualified for t in client.app.state.control.tables()})
    return unique


@pytest.fixture
def transport(client, auth):
    def exchange(method: str, path: str, body: Any) -> tuple[int, Any]:
        response = client.request(method, path, json=body, headers=auth)
        return response.status_code, response.json() if response.content else None

    return exchange


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


def test_validate_then_apply_twice(tmp_path, source, transport, records_of):
    path = write(tmp_path, PIPELINE.format(name=source))
    document = load(path, {"TEST_SALT": "from-the-environment"})
    assert document["nodes"][2]["salt"] == "from-the-environment"
    lines: list[str] = []
    assert validate(document, transport, lines.append) == 0
    assert lines[0] == "src: id integer, amount numeric, email text"
    assert validate(document, None, lines.append) == 0  # offline: structure only

    lines.clear()
    assert apply(document, transport, lines.append) == 0
    assert apply(document, transport, lines.append) == 0
    assert lines == [
        f"pipeline {source} created (generation 1)",
        f"pipeline {source} replaced (generation 2)",
    ]
    spec = PipelineSpec.model_validate(
        codec.loads(records_of(topics.CONTROL_PIPELINES, source)[-1])
    )
    assert spec.node("big").where == "amount > 100\n" and spec.node("hide").salt_encrypted


def test_problems_are_printed_with_node_line_and_column(tmp_path, source, transport):
    text = PIPELINE.format(name=source).replace("amount > 100", "amount > 100 AND\n      email > 1")
    document = load(write(tmp_path, text), {"TEST_SALT": "s"})
    lines: list[str] = []
    assert validate(document, transport, lines.append) == 1
    assert lines == [
        "node big (nodes.1.where): operator does not exist: text > integer [line 2, column 7]"
    ]
    assert apply(document, transport, lines.append) == 1


def test_offline_validation_reports_the_structure(tmp_path):
    document = load(write(tmp_path, "name: p\nnodes:\n  - {id: s, kind: explode}\n"), {})
    lines: list[str] = []
    assert validate(document, None, lines.append) == 1
    assert "nodes.0" in lines[0]


def test_yaml_keeps_on_as_a_key_and_only_true_false_as_booleans(tmp_path):
    document = load(
        write(tmp_path, "name: p\nnodes:\n  - {id: l, on: {id: x}, flag: yes, other: true}\n"), {}
    )
    assert document["nodes"][0] == {"id": "l", "on": {"id": "x"}, "flag": "yes", "other": True}


def test_usage_errors(tmp_path, capsys):
    with pytest.raises(UsageError, match="TEST_SALT"):
        load(write(tmp_path, PIPELINE.format(name="p")), {})
    with pytest.raises(UsageError, match="one pipeline"):
        load(write(tmp_path, "- just a list"), {})
    assert main(["pipeline", "validate", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err
