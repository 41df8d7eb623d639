"""Certificates for the brokers the harness runs with TLS, made with ``cryptography``.

Every TLS broker start gets a fresh set in its data directory (``<data dir>/tls``):

* a CA (``ca.pem``), a server certificate for ``127.0.0.1``/``localhost``
  (``server.pem``/``server.key``, also as a PKCS#12 keystore ``server.p12`` for Kafka)
  and a client certificate (``client.pem``/``client.key``, CN ``rrjobs-client``);
* a second, unrelated CA (``wrong-ca.pem``) and a client certificate it signed
  (``wrong-client.pem``/``wrong-client.key``): a client that trusts the wrong CA must
  refuse the broker, and a broker must refuse the wrong CA's client.

Keys are ECDSA P-256 (fast to make; RabbitMQ, Kafka's JVM, nats-server and Python's
``ssl`` all take them), written as unencrypted PKCS#8; certificates last two days.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The password of ``server.p12`` (a keystore password Kafka needs; not a credential).
KEYSTORE_PASSWORD = "rrjobs-keystore"
CLIENT_NAME = "rrjobs-client"
_VALIDITY = datetime.timedelta(days=2)


@dataclass(frozen=True)
class Certificates:
    """PEM files (and a PKCS#12 keystore) of one TLS broker start."""

    directory: Path
    ca: Path
    server_cert: Path
    server_key: Path
    server_keystore: Path
    client_cert: Path
    client_key: Path
    wrong_ca: Path
    wrong_client_cert: Path
    wrong_client_key: Path

    def client_tls(self) -> dict[str, str]:
        """A driver's ``tls:`` section trusting the CA, with the client certificate."""
        return {"root_ca": str(self.ca), "cert": str(self.client_cert),
                "key": str(self.client_key),
                "client_auth_type": "require_and_verify_client_cert"}

    def wrong_ca_tls(self) -> dict[str, str]:
        """The same section trusting the unrelated CA instead (the broker must be refused)."""
        return {**self.client_tls(), "root_ca": str(self.wrong_ca)}


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rrjobs tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now())
        .not_valid_after(_now() + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, common_name: str,
          *, server: bool) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    if server:
        san = x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                           x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        usage = ExtendedKeyUsageOID.SERVER_AUTH
    else:
        san = x509.SubjectAlternativeName([x509.DNSName(common_name)])
        usage = ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now())
        .not_valid_after(_now() + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                     key_cert_sign=False, crl_sign=False,
                                     content_commitment=False, data_encipherment=False,
                                     key_agreement=True, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(san, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def make_certificates(directory: Path) -> Certificates:
    """A fresh CA, server and client certificates, and the wrong CA, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("rrjobs test CA")
    server_key, server_cert = _leaf(ca_key, ca_cert, "127.0.0.1", server=True)
    client_key, client_cert = _leaf(ca_key, ca_cert, CLIENT_NAME, server=False)
    wrong_key, wrong_cert = _ca("rrjobs unrelated CA")
    stray_key, stray_cert = _leaf(wrong_key, wrong_cert, CLIENT_NAME, server=False)
    keystore = directory / "server.p12"
    keystore.write_bytes(pkcs12.serialize_key_and_certificates(
        b"server", server_key, server_cert, [ca_cert],
        serialization.BestAvailableEncryption(KEYSTORE_PASSWORD.encode())))
    return Certificates(
        directory=directory,
        ca=_write_cert(directory / "ca.pem", ca_cert),
        server_cert=_write_cert(directory / "server.pem", server_cert),
        server_key=_write_key(directory / "server.key", server_key),
        server_keystore=keystore,
        client_cert=_write_cert(directory / "client.pem", client_cert),
        client_key=_write_key(directory / "client.key", client_key),
        wrong_ca=_write_cert(directory / "wrong-ca.pem", wrong_cert),
        wrong_client_cert=_write_cert(directory / "wrong-client.pem", stray_cert),
        wrong_client_key=_write_key(directory / "wrong-client.key", stray_key),
    )
