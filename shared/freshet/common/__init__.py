"""Freshet's common library: the contracts every service shares.

Settings, Kafka clients, topic names, event schemas and codecs, and telemetry set-up. Imported by
the services, never run on its own.
"""
