"""Freshet's SQL: the expression language of pipelines and the compiler of view definitions.

Both parse with pglast (PostgreSQL's own parser) and compile to Python closures; user text is
never evaluated as Python. Values follow PostgreSQL's semantics (three-valued logic, numeric
scale rules, integer division), so a view equals what PostgreSQL returns for the same SQL.
"""
