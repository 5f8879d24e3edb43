"""Encryption of secrets that travel on desired-state topics (Fernet, from ``cryptography``).

Control encrypts a source's password before writing the spec to Kafka; the service that needs it
(ingest) decrypts it in memory. Neither the API nor a log ever shows it.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from freshet.common.exceptions import ConfigError


class SecretBox:
    """Encrypts and decrypts short secrets with the deployment's shared key."""

    def __init__(self, key: SecretStr) -> None:
        raw = key.get_secret_value()
        if not raw:
            raise ConfigError(
                "FRESHET_SECRET_KEY is not set: generate one with `python -c 'from "
                "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'` and "
                "give the same value to every service"
            )
        try:
            self._fernet = Fernet(raw.encode())
        except ValueError as exc:
            raise ConfigError(f"FRESHET_SECRET_KEY is not a valid Fernet key: {exc}") from exc

    @staticmethod
    def generate_key() -> str:
        return Fernet.generate_key().decode()

    def encrypt(self, secret: SecretStr) -> str:
        return self._fernet.encrypt(secret.get_secret_value().encode()).decode()

    def decrypt(self, token: str) -> SecretStr:
        try:
            return SecretStr(self._fernet.decrypt(token.encode()).decode())
        except InvalidToken as exc:
            raise ConfigError(
                "a secret on the desired-state topic cannot be decrypted: the services do not "
                "share one FRESHET_SECRET_KEY"
            ) from exc
