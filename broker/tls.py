"""TLS for the broker: production paths from the settings, or a local CA generated once."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from config.settings import Settings

CA_VALIDITY = dt.timedelta(days=3650)
SERVER_VALIDITY = dt.timedelta(days=825)


class TlsError(Exception):
    """TLS files are missing or inconsistent; the message names the setting to fix."""


@dataclass(frozen=True)
class TlsFiles:
    cafile: Path
    certfile: Path
    keyfile: Path


def configured_tls_files(settings: Settings) -> TlsFiles | None:
    """The production certificate paths, or None when the local CA should be used."""
    paths = (settings.mqtt_tls_cafile, settings.mqtt_tls_certfile, settings.mqtt_tls_keyfile)
    if all(path is None for path in paths):
        return None
    if any(path is None for path in paths):
        raise TlsError(
            "set all three of FLEETPULSE_MQTT_TLS_CAFILE, FLEETPULSE_MQTT_TLS_CERTFILE and "
            "FLEETPULSE_MQTT_TLS_KEYFILE, or none of them for a generated local CA"
        )
    files = TlsFiles(*paths)  # type: ignore[arg-type]
    for name, path in zip(("CAFILE", "CERTFILE", "KEYFILE"), paths, strict=True):
        assert path is not None
        if not path.is_file():
            raise TlsError(f"FLEETPULSE_MQTT_TLS_{name}={path} does not exist")
    return files


def default_hostnames() -> list[str]:
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    with contextlib.suppress(OSError):
        names.append(socket.getfqdn())
    return list(dict.fromkeys(name for name in names if name))


def ensure_local_ca(folder: Path, *, hostnames: list[str] | None = None) -> TlsFiles:
    """A self-signed CA and a server certificate it signed, generated once into `folder`.

    An existing set is kept as it is, so devices that trust the CA keep trusting it."""
    files = TlsFiles(folder / "ca.crt", folder / "server.crt", folder / "server.key")
    if all(path.exists() for path in (files.cafile, files.certfile, files.keyfile)):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetpulse local CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    names = hostnames or default_hostnames()
    alternative_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alternative_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternative_names.append(x509.DNSName(name))
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + SERVER_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(folder / "ca.key", _private_pem(ca_key), mode=0o600)
    _write(files.keyfile, _private_pem(server_key), mode=0o600)
    _write(files.certfile, server_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    _write(files.cafile, ca_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return files


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, mode: int) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)
