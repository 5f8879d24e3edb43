"""Freshet's benchmarks: ``python -m bench.run [name ...]`` (``make bench``).

Results go to BENCHMARKS.md, one section per benchmark.
"""
