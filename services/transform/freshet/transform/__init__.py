"""Freshet transform service."""
