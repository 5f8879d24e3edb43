"""Freshet's developer stack, started by ``make run`` / ``make up`` and by the test fixtures.

The embedded broker, PostgreSQL and Redis, the four services and a live demo.
"""
