"""Certificates made by the tests themselves (a CA, server and client certificates), and the
hostile bytes a TLS port must survive."""
from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class CertFiles:
    cert: Path
    key: Path


def _name(cn: str, org: str = "", ou: str = "") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    return x509.Name(attrs)


class CA:
    """A certificate authority writing its certificates into ``directory``."""

    def __init__(self, directory: Path, name: str = "test-ca") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        subject = _name(name)
        self._cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                      .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                      .not_valid_before(now - datetime.timedelta(days=1))
                      .not_valid_after(now + datetime.timedelta(days=30))
                      .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                      .add_extension(x509.KeyUsage(True, False, False, False, False, True, True,
                                                   False, False), critical=True)
                      .sign(self._key, hashes.SHA256()))
        self.cert_path = self.dir / f"{name}.crt"
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem: str, cn: str, *, server: bool = False, org: str = "", ou: str = "",
              expired: bool = False) -> CertFiles:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        start = now - datetime.timedelta(days=10 if expired else 1)
        end = now - datetime.timedelta(days=5) if expired else now + datetime.timedelta(days=10)
        b = (x509.CertificateBuilder().subject_name(_name(cn, org, ou))
             .issuer_name(self._cert.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage(
                 [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                 critical=False))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([
                x509.DNSName(cn), x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        cert = b.sign(self._key, hashes.SHA256())
        files = CertFiles(self.dir / f"{stem}.crt", self.dir / f"{stem}.key")
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
        return files


@dataclass
class PKI:
    """What most TLS tests need: one CA, a server certificate, a client certificate, and a
    client certificate from a CA nobody trusts."""

    ca: CA
    server: CertFiles
    client: CertFiles
    rogue: CertFiles

    @classmethod
    def make(cls, directory: Path) -> "PKI":
        ca = CA(directory, "ca")
        rogue_ca = CA(directory, "rogue-ca")
        return cls(ca, ca.issue("server", "promring.test", server=True),
                   ca.issue("client", "writer-1", org="team-a", ou="unit-a"),
                   rogue_ca.issue("rogue", "mallory", org="team-a"))

    def optional_client_web_config(self, path: Path) -> Path:
        """An --http.config at ``path`` serving this server certificate and verifying client
        certificates when given (client_ca_file: the tenant-certificate-field flags' case)."""
        path.write_text(f"tls_server_config:\n  cert_file: {self.server.cert}\n"
                        f"  key_file: {self.server.key}\n"
                        "  client_auth_type: VerifyClientCertIfGiven\n"
                        f"  client_ca_file: {self.ca.cert_path}\n")
        return path

    def client_context(self, cert: CertFiles | None) -> ssl.SSLContext:
        """A client context trusting this CA, presenting ``cert`` (None: no certificate)."""
        c = ssl.create_default_context(cafile=str(self.ca.cert_path))
        if cert is not None:
            c.load_cert_chain(cert.cert, cert.key)
        return c


def send_hostile_bytes(port: int) -> None:
    """What a TLS port must survive: plain HTTP/1.1 and HTTP/2, broken ClientHellos."""
    for payload in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00" * 64,
                    b"\x16\x03\x01\x00\xff" + b"\xde\xad" * 200,  # a broken ClientHello
                    b"\x16\x03\x03" + b"\xff" * 3000):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(payload)
            s.settimeout(5)
            try:
                while s.recv(4096):
                    pass
            except (ConnectionResetError, socket.timeout):
                pass


def self_signed(directory: Path, cn: str = "localhost") -> CertFiles:
    """A server certificate signed by its own key, trusted by no CA anywhere."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=10))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName(cn), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    files = CertFiles(directory / f"{cn}-self.crt", directory / f"{cn}-self.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


def tls_handshake(port: int, pki: PKI, max_version: ssl.TLSVersion | None = None) -> str:
    """Handshake with 127.0.0.1:``port`` as a client trusting ``pki``'s CA and presenting its
    client certificate, offering TLS up to ``max_version``; the negotiated version, or
    ssl.SSLError / ConnectionError when the server refuses."""
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert_path))
    ctx.load_cert_chain(pki.client.cert, pki.client.key)
    ctx.set_alpn_protocols(["h2"])
    if max_version is not None:
        ctx.maximum_version = max_version
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return s.version() or ""
