"""Fixtures of serve's tests (the servers themselves come from freshet.devstack.pytest_plugin)."""

from __future__ import annotations

from typing import Any

import pytest


def sqlalchemy_url(server: Any, dbname: str) -> str:
    return (
        f"postgresql+psycopg://{server.user}:{server.password}@{server.host}:{server.port}/{dbname}"
    )


@pytest.fixture
def target_url(pg_database: Any) -> str:
    """A database of this test's own, as serve's target (SQLAlchemy URL)."""
    return sqlalchemy_url(pg_database.server, pg_database.dbname)
