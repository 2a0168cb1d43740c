"""The server's TLS credentials, reloaded from their files without a restart.

grpc asks :meth:`ServerTls.fetch` for a new certificate configuration at
every new handshake (``grpc.dynamic_ssl_server_credentials``); it answers None
(keep the current one) unless the certificate, key or client CA files changed
and load cleanly. Connections already open keep the certificate they were
opened with; the server recycles every connection after
``TASKGATE_GRPC_MAX_CONNECTION_AGE``, so all of them use a rotated certificate
within that time.

With a client CA, every client must present a certificate it signed (mTLS):
grpc refuses the handshake otherwise, before any call is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc

from server.config import Settings
from taskgate_runtime.tls import KeyPair, Reloading, TlsFile, read_ca, read_key_pair


@dataclass(frozen=True)
class ServerFiles:
    """What the files held at the last (re)load."""

    key_pair: KeyPair
    client_ca: bytes | None

    def __repr__(self) -> str:
        client_ca = ", client certificates required" if self.client_ca is not None else ""
        return f"{self.key_pair!r}{client_ca}"

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        pair = (self.key_pair.private_key, self.key_pair.certificate_chain)
        return grpc.ssl_server_certificate_configuration([pair], self.client_ca)


class ServerTls:
    """The certificate, key and client CA named by the settings; TlsFileError if unusable."""

    def __init__(self, settings: Settings) -> None:
        assert settings.tls_cert_file is not None
        assert settings.tls_key_file is not None
        self._cert = TlsFile(settings.variable("tls_cert_file"), settings.tls_cert_file)
        self._key = TlsFile(settings.variable("tls_key_file"), settings.tls_key_file)
        self._client_ca = (
            None
            if settings.tls_client_ca_file is None
            else TlsFile(settings.variable("tls_client_ca_file"), settings.tls_client_ca_file)
        )
        paths: list[Path] = [self._cert.path, self._key.path]
        if self._client_ca is not None:
            paths.append(self._client_ca.path)
        self.files = Reloading(self._read, paths, what="server certificate")

    def _read(self) -> ServerFiles:
        return ServerFiles(
            key_pair=read_key_pair(self._cert, self._key),
            client_ca=None if self._client_ca is None else read_ca(self._client_ca),
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """grpc's callback, on its own threads: a new configuration, or None to keep it."""
        loaded = self.files.refresh()
        return None if loaded is None else loaded.configuration()

    def credentials(self) -> grpc.ServerCredentials:
        # grpc documents None as "keep the current configuration"; the stubs omit it.
        fetch = cast(Callable[[], grpc.ServerCertificateConfiguration], self.fetch)
        return grpc.dynamic_ssl_server_credentials(
            self.files.current.configuration(),
            fetch,
            require_client_authentication=self._client_ca is not None,
        )
