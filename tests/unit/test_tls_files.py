"""taskgate_runtime.tls on real files: what is refused (naming the variable,
never showing the key), and when Reloading loads again."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devstack.certs import Authority
from taskgate_runtime.tls import Reloading, TlsFile, TlsFileError, read_ca, read_key_pair


@pytest.fixture
def files(tmp_path: Path) -> tuple[TlsFile, TlsFile]:
    ca = Authority()
    issued = ca.issue("server", hosts=["localhost"])
    (tmp_path / "tls.crt").write_bytes(issued.certificate)
    (tmp_path / "tls.key").write_bytes(issued.private_key)
    return TlsFile("CERT_VAR", tmp_path / "tls.crt"), TlsFile("KEY_VAR", tmp_path / "tls.key")


def test_a_matching_pair_is_read_and_its_repr_shows_no_key(
    files: tuple[TlsFile, TlsFile],
) -> None:
    pair = read_key_pair(*files)

    assert pair.subject == "CN=server"
    assert b"PRIVATE KEY" in pair.private_key
    assert "PRIVATE" not in repr(pair)
    assert "CN=server" in repr(pair)


def test_what_is_refused_names_the_variable_and_the_file(
    files: tuple[TlsFile, TlsFile], tmp_path: Path
) -> None:
    cert, key = files
    encrypted = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    other = TlsFile("KEY_VAR", tmp_path / "other.key")
    other.path.write_bytes(Authority().issue("x").private_key)
    garbage = TlsFile("CERT_VAR", tmp_path / "garbage.crt")
    garbage.path.write_bytes(b"not a certificate")

    with pytest.raises(TlsFileError, match=r"^KEY_VAR: .*other\.key: does not match .* CERT_VAR$"):
        read_key_pair(cert, other)
    with pytest.raises(TlsFileError, match=r"^CERT_VAR: .*garbage\.crt: not a PEM certificate$"):
        read_key_pair(garbage, key)
    with pytest.raises(TlsFileError, match=r"^CA_VAR: .*garbage\.crt: not a PEM certificate$"):
        read_ca(TlsFile("CA_VAR", garbage.path))
    key.path.write_bytes(encrypted)
    with pytest.raises(TlsFileError, match="not an unencrypted PEM private key") as refused:
        read_key_pair(cert, key)
    assert "ENCRYPTED" not in str(refused.value)


def test_reloading_loads_again_only_when_a_file_changed_and_keeps_the_last_good(
    files: tuple[TlsFile, TlsFile], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = files
    reloading = Reloading(lambda: read_key_pair(cert, key), [cert.path, key.path], what="pair")
    first = reloading.current
    assert reloading.refresh() is None  # nothing changed

    issued = Authority().issue("next", hosts=["localhost"])
    cert.path.write_bytes(issued.certificate)  # the key is still the old one
    with caplog.at_level(logging.WARNING, logger="taskgate.tls"):
        assert reloading.refresh() is None
    assert reloading.current is first
    assert "kept the previous pair: KEY_VAR" in caplog.text
    assert reloading.refresh() is None  # the same bad files are not read again

    key.path.write_bytes(issued.private_key)
    fresh = reloading.refresh()
    assert fresh is not None
    assert fresh.subject == "CN=next"
    assert reloading.current is fresh
    assert reloading.reloads == 1

    cert.path.unlink()  # gone: an error, the last good pair stays
    assert reloading.refresh() is None
    assert reloading.current is fresh


def test_a_loader_that_fails_unexpectedly_keeps_the_last_good_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    watched = tmp_path / "watched"
    watched.write_text("one")
    values = iter(["first"])

    def load() -> str:
        return next(values)  # StopIteration the second time: a surprise

    reloading = Reloading(load, [watched], what="value")
    watched.write_text("two, longer")
    with caplog.at_level(logging.ERROR, logger="taskgate.tls"):
        assert reloading.refresh() is None
    assert reloading.current == "first"
    assert "kept the previous value: loading the new files failed" in caplog.text
