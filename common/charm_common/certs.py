"""Keys, CSRs and certificates (``cryptography``): a small CA, nothing more.

Private keys are generated where they are used and never leave that machine; only CSRs
and certificates travel. Every function takes and returns PEM text.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
CERT_DAYS = 365
# Renew once less than this share of a certificate's lifetime is left.
RENEW_AT_REMAINING = 1 / 3


class InvalidCertificateError(ValueError):
    """A PEM that is not a usable key, CSR or certificate."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def generate_private_key() -> str:
    """A new EC P-256 private key (PKCS#8 PEM, unencrypted: it is written mode 0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _load_key(key_pem: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidCertificateError(f"not a PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidCertificateError("only EC private keys are used here")
    return key


def load_certificate(cert_pem: str) -> x509.Certificate:
    """Parse a PEM certificate.

    Raises:
        InvalidCertificateError: not a PEM certificate.
    """
    try:
        return x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError as exc:
        raise InvalidCertificateError(f"not a PEM certificate: {exc}") from None


def _load_csr(csr_pem: str) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError as exc:
        raise InvalidCertificateError(f"not a PEM CSR: {exc}") from None
    if not csr.is_signature_valid:
        raise InvalidCertificateError("the CSR's signature does not verify")
    return csr


def _general_names(sans: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for san in sans:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            names.append(x509.DNSName(san))
    return names


def generate_ca(common_name: str, days: int = CA_DAYS) -> tuple[str, str]:
    """A self-signed CA: ``(private key PEM, certificate PEM)``."""
    key_pem = generate_private_key()
    key = _load_key(key_pem)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


def make_csr(key_pem: str, common_name: str, sans: Iterable[str]) -> str:
    """A CSR for ``key_pem`` with ``sans`` (IP addresses or DNS names)."""
    key = _load_key(key_pem)
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    names = _general_names(sans)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def sign_csr(csr_pem: str, ca_key_pem: str, ca_cert_pem: str, days: int = CERT_DAYS) -> str:
    """Sign a CSR as a server + client certificate, keeping its subject and SANs.

    Raises:
        InvalidCertificateError: the CSR, CA key or CA certificate is unusable.
    """
    csr = _load_csr(csr_pem)
    ca_key = _load_key(ca_key_pem)
    ca_cert = load_certificate(ca_cert_pem)
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        builder = builder.add_extension(sans.value, critical=False)
    except x509.ExtensionNotFound:
        pass
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def client_certificate(
    common_name: str, sans: Iterable[str] = (), days: int = CERT_DAYS
) -> tuple[str, str]:
    """A new key and a certificate for it: ``(private key PEM, certificate PEM)``.

    For a client that presents its own certificate (LXD trusts it by fingerprint): issued
    by a throwaway CA, whose key is not kept.
    """
    ca_key, ca_cert = generate_ca(f"{common_name} issuer")
    key = generate_private_key()
    return key, sign_csr(make_csr(key, common_name, sans), ca_key, ca_cert, days)


def certificate_sans(cert_pem: str) -> set[str]:
    """The IP addresses and DNS names a certificate (or a CSR) is for."""
    try:
        sans = (
            _load_either(cert_pem)
            .extensions.get_extension_for_class(x509.SubjectAlternativeName)
            .value
        )
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in sans.get_values_for_type(x509.IPAddress)} | set(
        sans.get_values_for_type(x509.DNSName)
    )


def _load_either(pem: str) -> x509.Certificate | x509.CertificateSigningRequest:
    if "CERTIFICATE REQUEST" in pem:
        return _load_csr(pem)
    return load_certificate(pem)


def public_key_der(pem: str) -> bytes:
    """The public key (DER) of a certificate, CSR or private key."""
    key = _load_key(pem).public_key() if "PRIVATE KEY" in pem else _load_either(pem).public_key()
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def certificate_matches_key(cert_pem: str, key_pem: str) -> bool:
    """Whether the certificate (or CSR) is for this private key."""
    return public_key_der(cert_pem) == public_key_der(key_pem)


def issued_by(cert_pem: str, ca_cert_pem: str) -> bool:
    """Whether ``ca_cert_pem`` signed ``cert_pem``."""
    cert, ca = load_certificate(cert_pem), load_certificate(ca_cert_pem)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def needs_renewal(cert_pem: str, now: datetime.datetime | None = None) -> bool:
    """Whether less than :data:`RENEW_AT_REMAINING` of the certificate's lifetime is left."""
    cert = load_certificate(cert_pem)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    left = end - (now or _now())
    return left <= (end - start) * RENEW_AT_REMAINING
