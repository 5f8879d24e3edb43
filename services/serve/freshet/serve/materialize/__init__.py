"""Materialization of view topics into serve's stores (Redis and PostgreSQL).

:mod:`.layout` (a view's fields and key, decoding records), :mod:`.values` (view-row JSON to
Python), :mod:`.keys` (order-preserving encoding), :mod:`.batch` (what one commit applies),
:mod:`.stores` (the store contract and its PostgreSQL and Redis implementations) and
:mod:`.task` (the loop that feeds one view's stores).
"""
