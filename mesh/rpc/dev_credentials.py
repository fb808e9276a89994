"""A throwaway certificate authority and tokens, for trying TLS locally and for tests.

``mesh certs DIR`` (and the tests, and the secure load bench) use this to
produce everything an ``[auth]`` table names: a CA certificate, one
certificate and key that every service presents (as server, and as client
for mutual TLS), a tokens file, and a token file per caller. The CA's key is
never written: nothing more can be signed, and a lost directory is simply
made anew. For production, use certificates from your own PKI.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DevCredentials", "new_token", "write_dev_credentials"]

DEFAULT_HOSTS = ("127.0.0.1", "localhost")
DEFAULT_CALLERS = ("mesh", "admin")


@dataclass(frozen=True)
class DevCredentials:
    ca: Path
    cert: Path
    key: Path
    tokens_file: Path
    tokens: dict[str, str]
    """Caller -> token; each is also in ``DIR/CALLER.token``."""

    def token_file(self, caller: str) -> Path:
        return self.ca.parent / f"{caller}.token"

    def auth_table(self, mesh_caller: str | None = None) -> str:
        """An ``[auth]`` table for a mesh config: mutual TLS, every caller's token, the mesh
        calling as ``mesh_caller`` (default "mesh", else the first caller), and only a caller
        named "admin" allowed to change tools."""
        mesh_caller = mesh_caller or ("mesh" if "mesh" in self.tokens else next(iter(self.tokens)))
        files = {
            "tls_cert": self.cert,
            "tls_key": self.key,
            "tls_ca": self.ca,
            "tokens_file": self.tokens_file,
            "token_file": self.token_file(mesh_caller),
        }
        lines = ["[auth]", "require_client_cert = true"]
        lines += [f"{key} = {json.dumps(str(path))}" for key, path in files.items()]
        lines.append("[auth.permissions]")
        lines += [f'{c} = ["*", "admin"]' if c == "admin" else f'{c} = ["*"]' for c in self.tokens]
        return "\n".join(lines) + "\n"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def write_dev_credentials(
    directory: Path,
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    tokens: Mapping[str, str] | None = None,
    valid_days: int = 30,
) -> DevCredentials:
    """Write a fresh CA, a certificate for ``hosts``, and ``tokens`` (caller -> token; by
    default a new token for each of DEFAULT_CALLERS) to ``directory``."""
    from cryptography.hazmat.primitives.asymmetric import ec  # late: only this command needs it

    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_pem = _certificate("smolmesh dev CA", ca_key, ca_key, None, valid_days)
    key = ec.generate_private_key(ec.SECP256R1())
    cert_pem = _certificate("smolmesh", key, ca_key, hosts, valid_days)
    credentials = DevCredentials(
        ca=directory / "ca.pem", cert=directory / "mesh.pem", key=directory / "mesh.key",
        tokens_file=directory / "tokens",
        tokens=dict(tokens) if tokens is not None else {c: new_token() for c in DEFAULT_CALLERS},
    )  # fmt: skip
    credentials.ca.write_bytes(ca_pem)
    credentials.cert.write_bytes(cert_pem)
    _write_secret(credentials.key, _key_pem(key))
    lines = "".join(f"{caller} {token}\n" for caller, token in credentials.tokens.items())
    _write_secret(credentials.tokens_file, lines.encode())
    for caller, token in credentials.tokens.items():
        _write_secret(credentials.token_file(caller), f"{token}\n".encode())
    return credentials


def _certificate(
    subject: str, key: Any, ca_key: Any, hosts: Sequence[str] | None, valid_days: int
) -> bytes:
    """A CA certificate when ``hosts`` is None, else a leaf for ``hosts`` signed by the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name("smolmesh dev CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=hosts is None, path_length=None), critical=True)
    )
    if hosts is not None:
        names = [_san(host) for host in hosts]
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _san(host: str) -> Any:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_secret(path: Path, data: bytes) -> None:
    """Readable by the owner only, from the moment it exists."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
