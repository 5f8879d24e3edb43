"""The one base exception of the project; each package derives its own from it."""


class FreshetError(Exception):
    """Base class of every error Freshet raises on purpose."""


class ConfigError(FreshetError):
    """A setting or a spec is invalid; the message names the setting and what to do."""


class KafkaError(FreshetError):
    """The broker refused or failed an operation that Freshet needs."""
