"""Registering the demo source and view: how control's answers map to done / retry / refused.

Control is stood in for by a local HTTP server that answers what control answers (the control
API's own tests cover control itself).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from freshet.devstack import demo

UNKNOWN = {
    "detail": [
        {
            "loc": ["body", "sql"],
            "msg": 'relation "customers" is not a table of any source',
            "type": "sql",
        }
    ]
}
BAD_SQL = {"detail": [{"loc": ["body", "sql"], "msg": 'syntax error at or near "SELEC"'}]}


class FakeControl:
    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, object]]] = []
        self.requests: list[tuple[str, dict[str, object], str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append((self.path, body, self.headers["Authorization"]))
                code, answer = fake.answers.pop(0)
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()


@pytest.fixture
def control() -> Iterator[FakeControl]:
    fake = FakeControl()
    yield fake
    fake.server.shutdown()


def test_the_demo_view_is_posted_with_its_name_and_sql(control):
    control.answers.append((201, {"name": demo.DEMO_VIEW}))
    result = demo.register_view(control.url, "token")
    assert result.done
    assert control.requests == [
        (
            "/v1/views",
            {"name": demo.DEMO_VIEW, "sql": demo.DEMO_VIEW_SQL, "indexes": ["orders", "revenue"]},
            "Bearer token",
        )
    ]


def test_an_unknown_table_is_retried_until_ingest_published_the_schemas(control):
    control.answers.append((422, UNKNOWN))
    result = demo.register_view(control.url, "token")
    assert (result.done, result.retry) == (False, True)
    assert "schemas" in result.detail


def test_other_refused_sql_is_final_and_says_why(control):
    control.answers.append((422, BAD_SQL))
    result = demo.register_view(control.url, "token", sql="SELEC 1")
    assert (result.done, result.retry) == (False, False)
    assert "SELEC" in result.detail


def test_an_existing_view_or_source_counts_as_registered(control):
    control.answers += [(409, {"detail": "exists"}), (409, {"detail": "exists"})]
    assert demo.register_view(control.url, "token").done
    assert demo.register_source(control.url, "token", {"name": "shop"}).done
    assert [path for path, _body, _auth in control.requests] == ["/v1/views", "/v1/sources"]


def test_an_unreachable_control_is_retried():
    result = demo.register_view("http://127.0.0.1:9", "token", timeout=2)
    assert (result.done, result.retry) == (False, True)


def test_the_demo_key_is_written_for_the_summary_and_readable_only_by_its_owner(control, tmp_path):
    control.answers.append((201, {"id": "abc12345", "key": "fsk_abc12345_s3cret"}))
    key_file = tmp_path / "state" / "demo-api-key"
    result = demo.create_key(control.url, "token", key_file)
    assert result.done, result.detail
    assert key_file.read_text() == "fsk_abc12345_s3cret\n"
    assert key_file.stat().st_mode & 0o777 == 0o600
    path, body, auth = control.requests[0]
    assert (path, auth) == ("/v1/keys", "Bearer token")
    assert body["products"] == [demo.DEMO_PRODUCT] and body["roles"] == ["demo"]


def test_the_demo_product_is_posted_and_a_refusal_writes_no_key(control, tmp_path):
    control.answers.append((201, {"name": demo.DEMO_PRODUCT}))
    assert demo.register_product(control.url, "token").done
    assert control.requests[0][0] == "/v1/products"
    assert control.requests[0][1]["view"] == demo.DEMO_VIEW
    control.answers.append((422, {"detail": [{"loc": ["body", "roles"], "msg": "bad"}]}))
    key_file = tmp_path / "demo-api-key"
    result = demo.create_key(control.url, "token", key_file)
    assert not result.done and not result.retry and "422" in result.detail
    assert not key_file.exists()
