"""Token signing keys kept in the data directory, with rotation.

The newest key signs. An older key keeps verifying until every token it can have signed has
expired: a key stops signing when its successor is created, so it is deleted only once its
successor is older than the longest token lifetime (plus a margin). A rotation therefore never
cuts off tokens that were already handed out.

Keys are files ``<created>-<kid>.pem`` (PKCS#8, mode 0600) in ``<data_dir>/keys`` (mode 0700).
``vimkit keys rotate`` writes a new file from another process; a running server sees it on its
next :meth:`KeyStore.reload` (the token service reloads at most once a second).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

log = logging.getLogger("vimkit.auth")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    created: float
    private_pem: bytes
    public_pem: bytes
    # Parsed key objects, so that signing and verifying do not parse PEM on every call.
    private_key: Any = field(default=None, compare=False, repr=False)
    public_key: Any = field(default=None, compare=False, repr=False)

    @property
    def filename(self) -> str:
        return f"{self.created:.6f}-{self.kid}.pem"


class KeyStore:
    """ES256 keys as ``<created>-<kid>.pem`` files in ``<data_dir>/keys`` (mode 0600)."""

    def __init__(self, data_dir: Path, retain_seconds: float) -> None:
        self.directory = data_dir / "keys"
        self.retain_seconds = retain_seconds
        self._keys: list[SigningKey] = []
        self._names: tuple[str, ...] | None = None
        self.reload()

    def reload(self) -> None:
        """Re-read the directory when its listing changed; create the first key when it is empty."""
        self._ensure_directory()
        names = tuple(sorted(path.name for path in self.directory.glob("*.pem")))
        if names == self._names and self._keys:
            return
        keys: list[SigningKey] = []
        for name in names:
            try:
                keys.append(self._load(self.directory / name))
            except (OSError, ValueError, TypeError) as exc:
                # A foreign or damaged file must not stop the server from verifying the others.
                log.warning("ignoring unreadable signing key file %s: %s", name, type(exc).__name__)
        if not keys:
            keys = [self._generate()]
            names = tuple(sorted(path.name for path in self.directory.glob("*.pem")))
        self._keys = sorted(keys, key=lambda key: key.created)
        self._names = names

    def _ensure_directory(self) -> None:
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)

    @staticmethod
    def _load(path: Path) -> SigningKey:
        created_text, kid = path.stem.split("-", 1)
        private_pem = path.read_bytes()
        private = serialization.load_pem_private_key(private_pem, password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name != "secp256r1":
            raise ValueError("not a P-256 key")
        public = private.public_key()
        public_pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return SigningKey(kid, float(created_text), private_pem, public_pem, private, public)

    def _generate(self) -> SigningKey:
        private = ec.generate_private_key(ec.SECP256R1())
        private_pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        created = time.time()
        kid = secrets.token_hex(8)
        path = self.directory / f"{created:.6f}-{kid}.pem"
        # Write under a name reload() ignores, then rename: a concurrent reader never sees half a key.
        partial = self.directory / f".{kid}.partial"
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(private_pem)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
        return self._load(path)

    def rotate(self) -> SigningKey:
        """Make a new signing key and delete keys that can no longer have signed a live token."""
        self.reload()
        key = self._generate()
        self._names = None
        self.reload()
        self.prune()
        return key

    def prune(self) -> list[str]:
        """Delete keys whose successor is older than ``retain_seconds``; return their kids."""
        cutoff = time.time() - self.retain_seconds
        removed = []
        for old, successor in zip(self._keys, self._keys[1:]):
            if successor.created < cutoff:
                (self.directory / old.filename).unlink(missing_ok=True)
                removed.append(old.kid)
        if removed:
            self._names = None
            self.reload()
        return removed

    @property
    def current(self) -> SigningKey:
        return self._keys[-1]

    def verification_key(self, kid: str) -> SigningKey | None:
        for key in reversed(self._keys):
            if key.kid == kid:
                return key
        return None

    @property
    def keys(self) -> list[SigningKey]:
        return list(self._keys)
