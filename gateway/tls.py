"""The gateway's TLS: to the server it calls, and for the HTTPS site it serves.

- Upstream: TLS when ``TASKGATE_GATEWAY_UPSTREAM_TLS`` is true or an upstream
  file is set. The server is verified against ``…_UPSTREAM_CA_FILE`` (else the
  system's roots), under the name ``…_UPSTREAM_SERVER_NAME`` when the
  certificate names the server otherwise than the upstream address does; the
  gateway presents ``…_UPSTREAM_CERT_FILE``/``…_KEY_FILE`` to a server that
  requires client certificates. These are read at start-up (grpc's channel
  credentials are fixed): a rotated client certificate is taken on restart.
- Its site: HTTPS when ``TASKGATE_GATEWAY_TLS_CERT_FILE``/``…_KEY_FILE`` are
  set. Every handshake first checks whether the files changed
  (:class:`~taskgate_runtime.tls.Reloading`) and then runs on the newest good
  certificate, so a rotation needs no restart.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from gateway.config import Settings
from taskgate_runtime.tls import KeyPair, Reloading, TlsFile, read_ca, read_key_pair


def _file(settings: Settings, field: str) -> TlsFile | None:
    path: Path | None = getattr(settings, field)
    return None if path is None else TlsFile(settings.variable(field), path)


def upstream_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """None: plaintext to the server. TlsFileError when a file is unusable."""
    if not settings.upstream_uses_tls:
        return None
    ca = _file(settings, "upstream_ca_file")
    cert, key = _file(settings, "upstream_cert_file"), _file(settings, "upstream_key_file")
    pair = None if cert is None or key is None else read_key_pair(cert, key)
    return grpc.ssl_channel_credentials(
        root_certificates=None if ca is None else read_ca(ca),
        private_key=None if pair is None else pair.private_key,
        certificate_chain=None if pair is None else pair.certificate_chain,
    )


def upstream_options(settings: Settings) -> list[tuple[str, Any]]:
    """The channel options TLS adds: the name the server's certificate must carry."""
    if not settings.upstream_uses_tls or settings.upstream_server_name is None:
        return []
    return [("grpc.ssl_target_name_override", settings.upstream_server_name)]


@dataclass(frozen=True)
class SiteCertificate:
    """A loaded certificate: the context that serves it, and what it is (for the log)."""

    context: ssl.SSLContext
    key_pair: KeyPair

    def __repr__(self) -> str:
        return repr(self.key_pair)


class SiteTls:
    """The HTTPS site's context, following its certificate files."""

    def __init__(self, cert: TlsFile, key: TlsFile) -> None:
        self._cert, self._key = cert, key
        self.certificates = Reloading(self._load, [cert.path, key.path], what="HTTPS certificate")
        # The site's context: every handshake starts on it and moves to the newest.
        self.context = self.certificates.current.context
        self.context.sni_callback = self._on_handshake

    def _load(self) -> SiteCertificate:
        pair = read_key_pair(self._cert, self._key)  # a mismatch is told naming the variables
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.set_alpn_protocols(["http/1.1"])
        try:
            context.load_cert_chain(self._cert.path, self._key.path)
        except (OSError, ssl.SSLError) as exc:  # the files changed between the two reads
            raise self._key.error(f"cannot load it with {self._cert.variable}: {exc}") from None
        return SiteCertificate(context=context, key_pair=pair)

    def _on_handshake(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        """Every handshake (with or without SNI): the newest good certificate."""
        self.certificates.refresh()
        newest = self.certificates.current.context
        if connection.context is not newest:
            connection.context = newest


def site_tls(settings: Settings) -> SiteTls | None:
    """None: plain HTTP. TlsFileError when a file is unusable."""
    cert, key = _file(settings, "tls_cert_file"), _file(settings, "tls_key_file")
    if cert is None or key is None:
        return None
    return SiteTls(cert, key)
