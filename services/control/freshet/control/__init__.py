"""Freshet control service."""
