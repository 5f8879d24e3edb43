"""Stores of materialized views: the contract (:mod:`.base`) and its implementations.

Adding a store: implement :class:`~.base.ViewStore` (positions committed with the rows, the
fencing of unexpected positions and generations), drop its data in
:meth:`freshet.serve.service.ServeService._drop` and ``_sweep``, and build it in
``ServeService._stores``.
"""
