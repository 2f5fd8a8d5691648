"""Certificates and join tokens, shaped like the ones k3s makes.

k3s keeps two CAs under ``<data-dir>/server/tls``: ``server-ca`` signs serving
certificates (clients trust it; ``/cacerts`` serves it; the join token carries
its SHA-256) and ``client-ca`` signs client certificates (the API trusts
those). Keys are ECDSA P-256, as in k3s. Only APIs present in cryptography 38
(Debian bookworm) are used.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.oid import NameOID


SERVICE_IP = "10.43.0.1"
"""The first address of k3s' default service CIDR, the ``kubernetes`` service."""


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate (possibly a chain) and its PEM private key."""

    cert: bytes
    key: bytes

    def save(self, directory: str, name: str) -> tuple[str, str]:
        """Write ``<name>.crt`` and ``<name>.key`` (0600) into ``directory``."""
        os.makedirs(directory, exist_ok=True)
        crt, key = (os.path.join(directory, f"{name}.{ext}") for ext in ("crt", "key"))
        with open(crt, "wb") as out:
            out.write(self.cert)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(self.key)
        return crt, key

    @classmethod
    def load(cls, directory: str, name: str) -> KeyPair | None:
        """Read a pair saved with :meth:`save`, or None when it is missing."""
        try:
            with open(os.path.join(directory, f"{name}.crt"), "rb") as crt:
                cert = crt.read()
            with open(os.path.join(directory, f"{name}.key"), "rb") as key:
                return cls(cert, key.read())
        except FileNotFoundError:
            return None


def _name(cn: str, orgs: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def new_ca(cn: str) -> KeyPair:
    """A self-signed CA valid for ten years, like k3s' ``k3s-*-ca@<time>``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = _name(f"{cn}@{int(now.timestamp())}")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(_key_usage(ca=True), True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False
        )
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Key usage of k3s's certificates; only CAs may sign certificates."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _issue(
    ca: KeyPair,
    subject: x509.Name,
    usage: x509.ObjectIdentifier | list[x509.ObjectIdentifier],
    sans: list[x509.GeneralName] | None = None,
) -> KeyPair:
    usages = usage if isinstance(usage, list) else [usage]
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(_key_usage(ca=False), True)
        .add_extension(x509.ExtendedKeyUsage(usages), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), False)
    cert = builder.sign(ca_key, hashes.SHA256())
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca.cert
    return KeyPair(chain, _key_pem(key))


def serving_sans(
    node_name: str,
    node_ips: Iterable[str],
    tls_sans: Iterable[str],
    cluster_domain: str = "cluster.local",
    advertise_address: str = "",
) -> list[str]:
    """The SANs k3s puts on its serving certificate, in k3s' order.

    ``pkg/daemons/control/deps`` starts from localhost, the kubernetes service
    names and the first service IP, then adds ``ControlConfig.SANs``: each
    ``--tls-san``, the advertise address, ``127.0.0.1``, ``::1``,
    ``localhost``, the node name and the node IPs. Duplicates are dropped.
    """
    names = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{cluster_domain}",
        SERVICE_IP,
        *tls_sans,
    ]
    if advertise_address:
        names.append(advertise_address)
    names += ["127.0.0.1", "::1", "localhost", node_name, *node_ips]
    seen: list[str] = []
    for name in names:
        if name and name not in seen:
            seen.append(name)
    return seen


def _general_names(names: Iterable[str]) -> list[x509.GeneralName]:
    result: list[x509.GeneralName] = []
    for name in names:
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            result.append(x509.DNSName(name))
    return result


def serving_cert(server_ca: KeyPair, sans: Iterable[str]) -> KeyPair:
    """The listener certificate (``CN=k3s, O=k3s``, as dynamiclistener names it)."""
    return _issue(
        server_ca,
        _name("k3s", ["k3s"]),
        ExtendedKeyUsageOID.SERVER_AUTH,
        _general_names(sans),
    )


def client_cert(client_ca: KeyPair, cn: str, orgs: Iterable[str] = ()) -> KeyPair:
    """A client certificate: the API authenticates its CN as the user."""
    return _issue(client_ca, _name(cn, orgs), ExtendedKeyUsageOID.CLIENT_AUTH)


def peer_cert(server_ca: KeyPair, sans: Iterable[str]) -> KeyPair:
    """The ``peer-server-client`` certificate of etcd: server and client use.

    Peers present it both ways on 2380; the server CA issued it, so only a
    server (which holds the CA key) can be a peer.
    """
    return _issue(
        server_ca,
        _name("etcd-peer", ["etcd"]),
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        _general_names(sans),
    )


def ca_hash(ca_pem: bytes) -> str:
    """The hex SHA-256 a ``K10`` token carries: of the bytes ``/cacerts`` serves."""
    return hashlib.sha256(ca_pem).hexdigest()


def random_secret() -> str:
    """A token secret for a server started without ``--token``."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Token:
    """A parsed join token: the CA hash it pins (may be empty) and its secret."""

    ca_hash: str
    username: str
    password: str

    @classmethod
    def parse(cls, text: str) -> Token:
        """Read a plain token or the ``K10<hash>::<user>:<password>`` form."""
        text = text.strip()
        if text.startswith("K10") and "::" in text:
            pinned, _, creds = text[3:].partition("::")
            user, sep, password = creds.partition(":")
            if sep:
                return cls(pinned, user, password)
            return cls(pinned, "", creds)
        return cls("", "", text)

    def full(self, ca_pem: bytes, username: str = "server") -> str:
        """The secure form k3s writes to ``server/token``."""
        return f"K10{ca_hash(ca_pem)}::{username}:{self.password}"
