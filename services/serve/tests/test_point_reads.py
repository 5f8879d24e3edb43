"""Point reads (``GET /v1/products/{name}/rows/{key}``) while the view moves to new generations.

A point read looks in the ready generation it saw last and learns in the same Redis round trip
whether that is still the ready one; these tests check that it never serves a generation that
is no longer ready.
"""

from __future__ import annotations

from typing import Any

import pytest

from freshet.serve.materialize.stores.redis import drop_view

from .api_util import ServeApi, wait_for
from .stores_util import spec

VIEW = spec("moving_api", {"id": "int8", "v": "text"}, {"id": ("int8", False)})


@pytest.fixture
def api(kafka: Any, redis_server: str):
    api = ServeApi(kafka.bootstrap, redis_server)
    yield api
    api.close()


def test_a_point_read_follows_the_view_to_its_new_generation(api: ServeApi) -> None:
    api.materialize(VIEW, [({"id": 1}, {"id": 1, "v": "first"}), ({"id": 2}, {"id": 2, "v": "x"})])
    product = api.product(VIEW)
    key = api.key(["reader"], [product.name])
    headers = {"Authorization": f"Bearer {key}"}
    path = f"/v1/products/{product.name}/rows"
    with api.client() as client:
        wait_for(client, f"{path}/1", key)
        assert client.get(f"{path}/1", headers=headers).json() == {"id": 1, "v": "first"}
        # Generation 2 becomes ready (generation 1's keys are unlinked): row 2 left the view.
        api.materialize(
            VIEW.model_copy(update={"generation": 2}), [({"id": 1}, {"id": 1, "v": "second"})]
        )
        assert client.get(f"{path}/1", headers=headers).json() == {"id": 1, "v": "second"}
        assert client.get(f"{path}/2", headers=headers).status_code == 404
        assert client.get(f"{path}/x", headers=headers).status_code == 400
        # The view is dropped: nothing is ready, and the read says so rather than a stale row.
        drop_view(api.redis, api.root, VIEW.name)
        response = client.get(f"{path}/1", headers=headers)
        assert response.status_code == 503, response.text
        assert "not materialized" in response.json()["detail"]
