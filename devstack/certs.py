"""A throwaway certificate authority: for tests, and for the compose stack's TLS.

``python -m devstack.certs DIR`` writes, unless ``DIR/ca.crt`` exists already,
a CA and two certificates it signed, in cert-manager's layout (the files of a
``kubernetes.io/tls`` Secret)::

    DIR/ca.crt                      the CA (verify the server with it: grpcurl -cacert, --ca-file)
    DIR/server/{tls.crt,tls.key,ca.crt}   the gRPC server: DNS server, localhost; IP 127.0.0.1
    DIR/gateway/{tls.crt,tls.key,ca.crt}  the gateway: a client certificate for mTLS to the
                                          server, and its HTTPS certificate (gateway, localhost)

Keys are P-256, certificates valid for ``--days`` (default 365). Not for
production: there, cert-manager (or your PKI) issues them (README, TLS).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PEM = serialization.Encoding.PEM


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _alternative_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


@dataclass(frozen=True)
class Issued:
    """A certificate (PEM) and its private key (PEM, unencrypted)."""

    certificate: bytes
    private_key: bytes

    def write(self, folder: Path, ca: bytes) -> None:
        """``tls.crt``, ``tls.key`` (0600) and ``ca.crt`` in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tls.crt").write_bytes(self.certificate)
        key = folder / "tls.key"
        key.touch(mode=0o600)
        key.write_bytes(self.private_key)
        (folder / "ca.crt").write_bytes(ca)


class Authority:
    """A self-signed CA that issues server and client certificates."""

    def __init__(self, common_name: str = "taskgate dev CA", *, days: int = 365) -> None:
        self.days = days
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = _name(common_name)
        builder = self._builder(self._name, self._key.public_key(), issuer=self._name)
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        self._certificate = builder.sign(self._key, hashes.SHA256())

    @property
    def pem(self) -> bytes:
        return self._certificate.public_bytes(PEM)

    def _builder(
        self, subject: x509.Name, key: ec.EllipticCurvePublicKey, *, issuer: x509.Name
    ) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=self.days))
        )

    def issue(self, common_name: str, *, hosts: Sequence[str] = (), client: bool = False) -> Issued:
        """A certificate for ``hosts`` (server auth), and for client auth when ``client``."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = self._builder(_name(common_name), key.public_key(), issuer=self._name)
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if hosts else []
        usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        if usages:  # RFC 5280: an extended key usage names one purpose at least
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        if hosts:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(_alternative_names(hosts)), critical=False
            )
        certificate = builder.sign(self._key, hashes.SHA256())
        return Issued(
            certificate=certificate.public_bytes(PEM),
            private_key=key.private_bytes(
                PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )


def write_dev_certificates(folder: Path, *, days: int = 365) -> bool:
    """The CA, server and gateway files in ``folder``; False when they are there already."""
    if (folder / "ca.crt").exists():
        return False
    ca = Authority(days=days)
    ca.issue("server", hosts=["server", "localhost", "127.0.0.1"]).write(folder / "server", ca.pem)
    ca.issue("gateway", hosts=["gateway", "localhost", "127.0.0.1"], client=True).write(
        folder / "gateway", ca.pem
    )
    # Last: its presence says the folder is complete.
    (folder / "ca.crt").write_bytes(ca.pem)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.certs", description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument(
        "--owner", help="UID:GID to give the files to (when run as root for another account)"
    )
    args = parser.parse_args(argv)
    made = write_dev_certificates(args.folder, days=args.days)
    if made and args.owner:
        uid, _, gid = args.owner.partition(":")
        for path in [args.folder, *args.folder.rglob("*")]:
            os.chown(path, int(uid), int(gid or uid))
    print(f"{'wrote' if made else 'kept'} the certificates in {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
