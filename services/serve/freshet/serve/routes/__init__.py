"""Serve's HTTP routes, one module per resource, aggregated in :data:`router`."""

from __future__ import annotations

from fastapi import APIRouter

from freshet.serve.routes import changes, docs, graphql, health, products

router = APIRouter()
router.include_router(health.router)
router.include_router(docs.router)
router.include_router(products.router)
router.include_router(changes.router)
router.include_router(graphql.router)
