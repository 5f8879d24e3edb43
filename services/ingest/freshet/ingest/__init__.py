"""Freshet ingest service."""
