"""Freshet's developer stack: the embedded broker, PostgreSQL and Redis, the four services and a
live demo, started by ``make run`` / ``make up`` and by the test fixtures."""
