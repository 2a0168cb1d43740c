"""Certificates and keys from PEM files, checked, and reloaded when the files change.

Every process that speaks TLS reads the same layout (cert-manager's, and
``kubectl create secret tls``'s): a certificate chain (``tls.crt``), its private
key (``tls.key``) and, where peers are verified, a CA bundle (``ca.crt``).

- :func:`read_key_pair` and :func:`read_ca` read and check the files: a chain
  that parses, an unencrypted key that matches the chain's first certificate,
  a bundle of at least one certificate. A problem is a :class:`TlsFileError`
  naming the variable and the file, never the key.
- :class:`Reloading` keeps the last good value of a loader and loads again when
  one of its files changed (size, mtime, inode: a Kubernetes Secret volume
  swaps a symlink, cert-manager rewrites the files). A half-written rotation
  (a new certificate next to the old key) is refused with a warning and the
  previous value is kept until the files agree again. ``refresh`` is cheap
  (a ``stat`` per file) and thread-safe: grpc calls it from its own threads on
  every handshake.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from taskgate_runtime.settings import ConfigError

log = logging.getLogger("taskgate.tls")

T = TypeVar("T")


class TlsFileError(ConfigError):
    """A certificate, key or CA file is missing, unreadable or malformed."""


@dataclass(frozen=True)
class TlsFile:
    """A file and the variable that named it (for messages)."""

    variable: str
    path: Path

    def read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise self.error(f"cannot read it: {exc.strerror or exc}") from None

    def error(self, problem: str) -> TlsFileError:
        return TlsFileError(f"{self.variable}: {self.path}: {problem}")


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate chain and its private key."""

    certificate_chain: bytes
    private_key: bytes
    not_after: datetime.datetime
    subject: str

    def __repr__(self) -> str:  # the key never reaches a repr or a log line
        return f"KeyPair(subject={self.subject!r}, not_after={self.not_after.isoformat()})"


def _certificates(file: TlsFile, data: bytes) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise file.error("not a PEM certificate") from None
    return certificates


def read_key_pair(cert: TlsFile, key: TlsFile) -> KeyPair:
    """The chain of ``cert`` and the key of ``key``; TlsFileError unless they belong together."""
    chain, key_data = cert.read(), key.read()
    leaf = _certificates(cert, chain)[0]
    try:
        private_key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise key.error("not an unencrypted PEM private key") from None
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if private_key.public_key().public_bytes(*raw) != leaf.public_key().public_bytes(*raw):
        raise key.error(f"does not match the certificate in {cert.variable}")
    return KeyPair(
        certificate_chain=chain,
        private_key=key_data,
        not_after=leaf.not_valid_after_utc,
        subject=leaf.subject.rfc4514_string(),
    )


def read_ca(ca: TlsFile) -> bytes:
    """A PEM bundle of one or more CA certificates."""
    data = ca.read()
    _certificates(ca, data)
    return data


def _signature(paths: Sequence[Path]) -> tuple[tuple[int, int, int, int], ...]:
    signature = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            signature.append((-1, -1, -1, -1))
        else:
            signature.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(signature)


class Reloading(Generic[T]):
    """``load()``'s last good result, loaded again when one of ``paths`` changed."""

    def __init__(
        self,
        load: Callable[[], T],
        paths: Sequence[Path],
        *,
        what: str,
        describe: Callable[[T], str] = repr,
    ) -> None:
        """Loads once: a TlsFileError here means the process cannot start.

        ``describe`` says what was loaded in the log line (never a key).
        """
        self._load = load
        self._paths = tuple(paths)
        self._what = what
        self._describe = describe
        self._lock = threading.Lock()
        self._seen = _signature(self._paths)
        self._current = load()
        self._reloads = 0
        log.info("loaded the %s: %s", what, describe(self._current))

    @property
    def current(self) -> T:
        return self._current

    @property
    def reloads(self) -> int:
        """How many times new files were taken (tests and logs)."""
        return self._reloads

    def refresh(self) -> T | None:
        """The new value when the files changed and load cleanly, else None (keep the current)."""
        with self._lock:
            seen = _signature(self._paths)
            if seen == self._seen:
                return None
            self._seen = seen
            try:
                loaded = self._load()
            except TlsFileError as exc:
                # Retried on the next change (the second file of a rotation lands later).
                log.warning("kept the previous %s: %s", self._what, exc)
                return None
            except Exception:  # called on every handshake: never let a surprise fail them
                log.exception("kept the previous %s: loading the new files failed", self._what)
                return None
            self._current = loaded
            self._reloads += 1
            log.info("reloaded the %s: %s", self._what, self._describe(loaded))
            return loaded
