"""Certificates made at test time (devstack.certs' CA), written where processes read them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from devstack.certs import Authority, Issued

LOCAL_HOSTS = ("localhost", "127.0.0.1")


@dataclass
class Files:
    """A certificate's three files in cert-manager's layout."""

    folder: Path

    @property
    def cert(self) -> Path:
        return self.folder / "tls.crt"

    @property
    def key(self) -> Path:
        return self.folder / "tls.key"

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"


def write(issued: Issued, authority: Authority, folder: Path) -> Files:
    issued.write(folder, authority.pem)
    return Files(folder)


def replace(files: Files, issued: Issued, authority: Authority) -> None:
    """A rotation as cert-manager does it: new files moved into place, never half-written."""
    staging = files.folder.with_name(files.folder.name + ".new")
    issued.write(staging, authority.pem)
    for name in ("tls.crt", "tls.key", "ca.crt"):
        os.replace(staging / name, files.folder / name)
    staging.rmdir()


def channel_credentials(ca: Authority, client: Issued | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.pem,
        private_key=None if client is None else client.private_key,
        certificate_chain=None if client is None else client.certificate,
    )


class SecretVolume:
    """A folder laid out as the kubelet writes a Secret volume (its AtomicWriter):
    the files are symlinks through ``..data`` to a timestamped folder, and an
    update swaps ``..data`` in one rename."""

    def __init__(self, folder: Path) -> None:
        self.files = Files(folder)
        self._generation = 0
        folder.mkdir(parents=True)

    def write(self, issued: Issued, authority: Authority) -> None:
        folder = self.files.folder
        self._generation += 1
        version = folder / f"..2026_12_03_{self._generation:02d}"
        issued.write(version, authority.pem)
        staging = folder / "..data_tmp"
        staging.symlink_to(version.name)
        previous = (folder / "..data").resolve() if (folder / "..data").exists() else None
        os.replace(staging, folder / "..data")
        for name in ("tls.crt", "tls.key", "ca.crt"):
            if not (folder / name).is_symlink():
                (folder / name).symlink_to(f"..data/{name}")
        if previous is not None:
            for child in previous.iterdir():
                child.unlink()
            previous.rmdir()
