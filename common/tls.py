"""TLS for every server and client: Thanos's ``--grpc-server-tls-*``/``--grpc-client-tls-*`` flags.

Certificates, keys and CAs are re-read when their files change, without a restart: an asyncio
server's context checks the files (at most once a second) in the TLS ClientHello callback of each
new connection and swaps in a freshly built context, so a rotation never fails a handshake.
Every gRPC server is our own HTTP/2 server on such a context (storeapi/h2server.py), so the
minimum TLS version is enforced everywhere; grpcio is used for some clients only.
"""
from __future__ import annotations

import argparse
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

log = logging.getLogger(__name__)

TLS_VERSIONS = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1,
                "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

# Go's tls.ClientAuthType names, as Prometheus's web config spells them. Go's RequestClientCert
# and RequireAnyClientCert accept unverified certificates, which OpenSSL via Python cannot.
NO_CLIENT_CERT = "NoClientCert"
REQUIRE_AND_VERIFY = "RequireAndVerifyClientCert"
CLIENT_AUTH_TYPES = {
    NO_CLIENT_CERT: ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    REQUIRE_AND_VERIFY: ssl.CERT_REQUIRED,
}
RECHECK_S = 1.0  # how often (at most) a handshake looks at the files' modification times


class TLSConfigError(ValueError):
    """A TLS setting that cannot work (missing key, unreadable file, unknown version)."""


@dataclass(frozen=True)
class ServerTLS:
    """A server's TLS: off without a certificate; clients verified against ``client_ca``."""

    cert: str = ""
    key: str = ""
    client_ca: str = ""
    min_version: str = "1.3"
    client_auth: str = ""  # Go's ClientAuthType; "" = RequireAndVerify with a CA, else none

    @property
    def enabled(self) -> bool:
        return bool(self.cert or self.key)

    @property
    def auth_type(self) -> str:
        if self.client_auth:
            return self.client_auth
        return REQUIRE_AND_VERIFY if self.client_ca else NO_CLIENT_CERT

    def files(self) -> tuple[str, ...]:
        return tuple(f for f in (self.cert, self.key, self.client_ca) if f)

    def validate(self, what: str) -> None:
        if bool(self.cert) != bool(self.key):
            raise TLSConfigError(f"{what}: both a certificate and a key are needed for TLS")
        if self.min_version not in TLS_VERSIONS:
            raise TLSConfigError(f"{what}: unknown TLS version {self.min_version!r} "
                                 f"(one of {', '.join(TLS_VERSIONS)})")
        if self.auth_type not in CLIENT_AUTH_TYPES:
            raise TLSConfigError(f"{what}: unknown client_auth_type {self.auth_type!r}")
        if self.client_ca and not self.enabled:
            raise TLSConfigError(f"{what}: a client CA needs a server certificate and key")
        if self.auth_type in ("VerifyClientCertIfGiven", REQUIRE_AND_VERIFY) and not self.client_ca:
            raise TLSConfigError(f"{what}: client_auth_type {self.auth_type} needs a client CA")
        for f in self.files():
            if not os.access(f, os.R_OK):
                raise TLSConfigError(f"{what}: cannot read {f}")


@dataclass(frozen=True)
class ClientTLS:
    """How a client dials TLS servers (Thanos's ``--grpc-client-tls-*`` flags)."""

    secure: bool = False
    cert: str = ""
    key: str = ""
    ca: str = ""
    server_name: str = ""
    skip_verify: bool = False

    def validate(self, what: str) -> None:
        if bool(self.cert) != bool(self.key):
            raise TLSConfigError(f"{what}: a client certificate needs its key and vice versa")
        for f in (self.cert, self.key, self.ca):
            if f and not os.access(f, os.R_OK):
                raise TLSConfigError(f"{what}: cannot read {f}")


def _stat(paths: tuple[str, ...]) -> tuple:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((p, st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((p, None))
    return tuple(out)


HTTP1 = ("http/1.1",)  # aiohttp servers: announcing h2 would make Go clients speak HTTP/2
H2 = ("h2",)           # gRPC servers: gRPC clients insist on h2


def build_server_context(cfg: ServerTLS, alpn: tuple[str, ...] = H2) -> ssl.SSLContext:
    """A fresh server context from the files as they are now; TLSConfigError if unusable."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[cfg.min_version]
    try:
        ctx.load_cert_chain(cfg.cert, cfg.key)
        if cfg.client_ca:
            ctx.load_verify_locations(cfg.client_ca)
        ctx.verify_mode = CLIENT_AUTH_TYPES[cfg.auth_type]
    except (OSError, ssl.SSLError) as e:
        raise TLSConfigError(f"loading TLS files {', '.join(cfg.files())}: {e}") from None
    ctx.set_alpn_protocols(list(alpn))
    return ctx


class ReloadingServerContext:
    """The ``ssl.SSLContext`` an asyncio server listens with; files re-read when they change.

    ``source`` returns the current ServerTLS (it may itself re-read a web config file). The
    outer context stays the same object; the ClientHello callback points each new connection
    at the newest inner context. A change of the client-verification mode only applies to
    connections created after it, so the one handshake that notices it is refused.
    """

    def __init__(self, source: Callable[[], ServerTLS], alpn: tuple[str, ...] = H2) -> None:
        self._source = source
        self._alpn = alpn
        self._lock = threading.Lock()
        cfg = source()
        self._cfg = cfg
        self._stats = _stat(cfg.files())
        self._checked = time.monotonic()
        self._current = build_server_context(cfg, alpn)
        self.context = build_server_context(cfg, alpn)
        self.context.sni_callback = self._on_hello

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < RECHECK_S:
            return
        with self._lock:
            self._checked = now
            cfg = self._source()
            stats = _stat(cfg.files())
            if cfg == self._cfg and stats == self._stats:
                return
            try:
                ctx = build_server_context(cfg, self._alpn) if cfg.enabled else None
            except TLSConfigError as e:  # a half-written file: keep serving the old one
                log.error("TLS reload failed, keeping the previous certificates",
                          extra={"err": str(e)})
                return
            if ctx is None:
                log.error("TLS cannot be switched off without a restart; keeping it on")
                return
            self._cfg, self._stats, self._current = cfg, stats, ctx
            log.info("TLS certificates reloaded", extra={"files": list(cfg.files())})

    def _on_hello(self, sslobj: ssl.SSLObject, server_name: str | None,
                  _: ssl.SSLContext) -> int | None:
        try:
            self._maybe_reload()
        except Exception as e:  # noqa: BLE001 -- a reload problem must not kill the server
            log.error("TLS reload check failed", extra={"err": str(e)})
        current = self._current
        if current.verify_mode != self.context.verify_mode:
            self.context.verify_mode = current.verify_mode
            return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
        sslobj.context = current
        return None


def server_ssl_context(cfg: ServerTLS | None, alpn: tuple[str, ...] = H2
                       ) -> ssl.SSLContext | None:
    """An asyncio server's ssl argument (None = plain text)."""
    if cfg is None or not cfg.enabled:
        return None
    return ReloadingServerContext(lambda: cfg, alpn).context


def peer_certificate(transport) -> dict | None:
    """The verified client certificate of a connection (``SSLSocket.getpeercert`` form)."""
    if transport is None:
        return None
    ssl_obj = transport.get_extra_info("ssl_object")
    if ssl_obj is None:
        return None
    try:
        return ssl_obj.getpeercert() or None
    except ValueError:
        return None


# Thanos's --*.tenant-certificate-field values -> the subject attribute each reads.
CERTIFICATE_FIELDS = {"organization": "organizationName",
                      "organizationalUnit": "organizationalUnitName",
                      "commonName": "commonName"}


def certificate_field(cert: dict | None, field: str) -> str:
    """The value of ``field`` (a CERTIFICATE_FIELDS key) in the verified client certificate's
    subject, as Thanos's tenancy.getTenantFromCertificate reads it; ValueError with Thanos's
    message when there is no certificate or no such value. Several values are refused rather
    than the first taken: which one a CA lists first is no contract."""
    if not cert:
        raise ValueError("could not get required certificate field from client cert")
    attr = CERTIFICATE_FIELDS[field]
    values = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == attr]
    if not values or not values[0]:
        raise ValueError(f"could not get {field} field from client cert")
    if len(values) > 1:
        raise ValueError(f"client cert has {len(values)} {field} values; want exactly one")
    return values[0]


def is_metadata_value(value: str) -> bool:
    """gRPC's rule for a text metadata value (grpc-go refuses to send others): printable
    ASCII only."""
    return value.isascii() and value.isprintable()


def valid_query_tenant(tenant: str) -> bool:
    """A tenant a query may name: one path component, as Thanos's tenancy.IsTenantValid
    wants ("/" alone passes), and printable ASCII, the only text gRPC metadata carries to
    the stores. The querier and the query frontend refuse others ("Tenant name not valid")."""
    return ("/" not in tenant or tenant == "/") and is_metadata_value(tenant)


# --- grpc.aio clients --------------------------------------------------------------------------

def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSConfigError(f"reading {path}: {e}") from None


def grpc_channel(address: str, tls: ClientTLS | None, options,
                 interceptors: Sequence = ()) -> grpc.aio.Channel:
    """A grpc.aio channel to ``address``: plain, or TLS as ``tls`` says."""
    import grpc.aio
    interceptors = list(interceptors) or None
    if tls is None or not tls.secure:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    if tls.skip_verify:  # callers use our HTTP/2 client (storeapi/h2client.py) instead
        raise TLSConfigError("gRPC's Python client cannot skip certificate verification")
    creds = grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca) if tls.ca else None,
        private_key=_read(tls.key) if tls.key else None,
        certificate_chain=_read(tls.cert) if tls.cert else None)
    opts = tuple(options)
    if tls.server_name:
        opts += (("grpc.ssl_target_name_override", tls.server_name),)
    return grpc.aio.secure_channel(address, creds, options=opts, interceptors=interceptors)


def client_ssl_context(tls: ClientTLS | None) -> ssl.SSLContext | None:
    """An ssl context for our own HTTP/2 client (None = plain text)."""
    if tls is None or not tls.secure:
        return None
    ctx = ssl.create_default_context(cafile=tls.ca or None)
    if tls.skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.cert:
        ctx.load_cert_chain(tls.cert, tls.key)
    ctx.set_alpn_protocols(["h2"])
    return ctx


# --- flags ------------------------------------------------------------------------------------

def add_server_tls_flags(p: argparse.ArgumentParser, prefix: str = "grpc-server") -> None:
    """``--grpc-server-tls-*`` or receive's ``--remote-write.server-tls-*``."""
    dest = prefix.replace("-", "_").replace(".", "_")
    p.add_argument(f"--{prefix}-tls-cert", dest=f"{dest}_tls_cert", default="",
                   help="TLS certificate of the server; empty: no TLS.")
    p.add_argument(f"--{prefix}-tls-key", dest=f"{dest}_tls_key", default="",
                   help="TLS key of the server; empty: no TLS.")
    p.add_argument(f"--{prefix}-tls-client-ca", dest=f"{dest}_tls_client_ca", default="",
                   help="CA clients must present a certificate of (mutual TLS); empty: clients "
                        "are not asked for one.")
    p.add_argument(f"--{prefix}-tls-min-version", dest=f"{dest}_tls_min_version",
                   default="1.3", choices=list(TLS_VERSIONS), help="Lowest TLS version accepted.")


def add_client_tls_flags(p: argparse.ArgumentParser, prefix: str = "grpc-client") -> None:
    """The querier's ``--grpc-client-*`` flags, or receive's ``--remote-write.client-*``."""
    dest = prefix.replace("-", "_").replace(".", "_")
    p.add_argument(f"--{prefix}-tls-secure", dest=f"{dest}_tls_secure", default=False,
                   action=argparse.BooleanOptionalAction, help="Use TLS to the gRPC servers.")
    p.add_argument(f"--{prefix}-tls-skip-verify", dest=f"{dest}_tls_skip_verify", default=False,
                   action=argparse.BooleanOptionalAction,
                   help="Do not verify the servers' certificates (e.g. self-signed ones).")
    p.add_argument(f"--{prefix}-tls-cert", dest=f"{dest}_tls_cert", default="",
                   help="Client certificate presented to the servers (mutual TLS).")
    p.add_argument(f"--{prefix}-tls-key", dest=f"{dest}_tls_key", default="",
                   help="Key of the client certificate.")
    p.add_argument(f"--{prefix}-tls-ca", dest=f"{dest}_tls_ca", default="",
                   help="CA the servers' certificates are verified against; empty: system CAs.")
    p.add_argument(f"--{prefix}-server-name", dest=f"{dest}_server_name", default="",
                   help="Name the servers' certificates must carry instead of the dialed host.")


def server_tls_from_flags(a: argparse.Namespace, prefix: str = "grpc-server") -> ServerTLS | None:
    """The ServerTLS of ``add_server_tls_flags(prefix)``; None when the command has none."""
    dest = prefix.replace("-", "_").replace(".", "_")
    if not hasattr(a, f"{dest}_tls_cert"):
        return None
    cfg = ServerTLS(cert=getattr(a, f"{dest}_tls_cert"), key=getattr(a, f"{dest}_tls_key"),
                    client_ca=getattr(a, f"{dest}_tls_client_ca"),
                    min_version=getattr(a, f"{dest}_tls_min_version"))
    cfg.validate(f"--{prefix}-tls-*")
    return cfg


def client_tls_from_flags(a: argparse.Namespace, prefix: str = "grpc-client") -> ClientTLS | None:
    """The ClientTLS of ``add_client_tls_flags(prefix)``; None when the command has none."""
    dest = prefix.replace("-", "_").replace(".", "_")
    if not hasattr(a, f"{dest}_tls_secure"):
        return None
    cfg = ClientTLS(secure=getattr(a, f"{dest}_tls_secure"), cert=getattr(a, f"{dest}_tls_cert"),
                    key=getattr(a, f"{dest}_tls_key"), ca=getattr(a, f"{dest}_tls_ca"),
                    server_name=getattr(a, f"{dest}_server_name"),
                    skip_verify=getattr(a, f"{dest}_tls_skip_verify"))
    cfg.validate(f"--{prefix}-tls-*")
    return cfg
