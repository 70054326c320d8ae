"""TLS for the relay connection: certificates, pins and SSL contexts.

The relay's certificate is *pinned*: the invitation carries the SHA-256 of its DER bytes
(``sha256:<hex>``), and a party that connects checks it before it says anything, so the
right relay is known without a public CA (a self-signed certificate is enough). Without
a pin, the certificate is verified against the system's CAs and the host name, as a
browser would. TLS protects the way to the relay; the payloads are sealed end to end
between the parties whatever the transport (:mod:`fedlab_kit.net.sealing`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import os
import ssl
from pathlib import Path

from ...errors import InputError, RelayRejected

PIN_PREFIX = "sha256:"


def pin_of(der: bytes) -> str:
    """The pin of a certificate given as DER bytes."""
    return PIN_PREFIX + hashlib.sha256(der).hexdigest()


def pin_of_file(cert: str | os.PathLike[str]) -> str:
    """The pin of a PEM certificate file (what ``fedlab relay`` prints and invitations
    carry)."""
    try:
        pem = Path(cert).read_text()
        der = ssl.PEM_cert_to_DER_cert(pem)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the certificate {str(cert)!r}: {exc}") from None
    return pin_of(der)


def make_self_signed(host: str, cert: str | os.PathLike[str], key: str | os.PathLike[str],
                     *, days: int = 825) -> str:
    """Write a self-signed ECDSA P-256 certificate for ``host`` (a name or an IP) and its
    key (mode 0600); returns the certificate's pin."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(private.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=days))
                   .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
                   .sign(private, hashes.SHA256()))
    key_path, cert_path = Path(key), Path(cert)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.unlink(missing_ok=True)  # an old key file keeps its mode: start afresh
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return pin_of(certificate.public_bytes(serialization.Encoding.DER))


def server_context(cert: str | os.PathLike[str], key: str | os.PathLike[str]
                   ) -> ssl.SSLContext:
    """The relay's TLS context (TLS 1.2 or newer)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise InputError(f"cannot load the relay's TLS certificate {str(cert)!r} and key "
                         f"{str(key)!r}: {exc}") from None
    return ctx


def client_context(pin: str) -> ssl.SSLContext:
    """A party's TLS context: with a pin the certificate is checked by :func:`check_pin`
    after the handshake (no CA needed); without one, by the system's CAs and host name."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if pin:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def check_pin(ssl_object: ssl.SSLObject | None, pin: str, where: str) -> None:
    """Refuse the connection unless the relay's certificate has ``pin``."""
    if not pin:
        return
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    got = pin_of(der) if der else "no certificate"
    if not hmac.compare_digest(got, pin):
        raise RelayRejected(f"the relay at {where} is not the one in the invitation: its "
                            f"certificate is {got}, the invitation pins {pin} (a wrong "
                            "address, a new certificate, or someone in between)", "pin")
