"""Encryption of subscription credentials at rest (Fernet: AES-128-CBC + HMAC-SHA256).

The VIM must present the subscriber's password or client secret when it calls back, so these
secrets are stored encrypted rather than hashed. The key lives in ``<data_dir>/notify.key``,
or comes from ``VIMKIT_SECRET_KEY`` so that several replicas share it.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
from cryptography.fernet import Fernet, InvalidToken


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_data_dir(cls, data_dir: Path, configured_key: str | None = None) -> SecretBox:
        if configured_key:
            return cls(configured_key.encode())
        path = data_dir / "notify.key"
        if not path.exists():
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(Fernet.generate_key())
        return cls(path.read_bytes().strip())

    def seal(self, value: dict) -> str:
        return self._fernet.encrypt(orjson.dumps(value)).decode()

    def open(self, token: str) -> dict:
        try:
            return orjson.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken as exc:
            raise ValueError("subscription credentials cannot be decrypted with this key") from exc
