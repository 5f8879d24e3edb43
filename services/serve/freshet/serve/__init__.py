"""Freshet serve service."""
