"""Prometheus's web configuration file (``--http.config``): TLS, basic auth, response headers.

The exporter-toolkit format Prometheus and its exporters share::

    tls_server_config: {cert_file, key_file, client_auth_type, client_ca_file, min_version}
    http_server_config: {http2, headers: {Strict-Transport-Security: ..., ...}}
    basic_auth_users: {name: <bcrypt hash>}

The file is re-read when it changes (checked at most once a second, by a request or a TLS
handshake); an edit that does not parse keeps the previous configuration and is logged.
Password checks are bcrypt (constant-time by construction), one at a time in a worker thread,
with results cached by a digest of user, hash and password -- so a flood of wrong passwords
costs at most one core and queues, and a repeated right one costs a dictionary lookup.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import bcrypt
import yaml
from aiohttp import web

from common.tls import NO_CLIENT_CERT, ServerTLS, TLSConfigError

log = logging.getLogger(__name__)

_TLS_VERSIONS = {"TLS10": "1.0", "TLS11": "1.1", "TLS12": "1.2", "TLS13": "1.3"}
_CLIENT_AUTH = {"": NO_CLIENT_CERT, "NoClientCert": NO_CLIENT_CERT,
                "VerifyClientCertIfGiven": "VerifyClientCertIfGiven",
                "RequireAndVerifyClientCert": "RequireAndVerifyClientCert"}
# exporter-toolkit lets only these security headers be set, some only to these values.
_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (), "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"), "X-XSS-Protection": (),
    "Content-Security-Policy": ()}
# Compared against for unknown users so that they cost what known ones do.
_DUMMY_HASH = b"$2b$10$acLp5bQUB2xLtGWcuwU39uwjLGGJS2X.LkcIvTRE.7d48PSBwzogi"  # of a random password nobody knows
CACHE_ENTRIES = 1024
MAX_WAITING_CHECKS = 256  # password checks queued beyond this are answered 429
RECHECK_S = 1.0


class WebConfigError(ValueError):
    """The web config file cannot be used (bad YAML, unknown key, bad hash, bad TLS)."""


@dataclass(frozen=True)
class WebConfig:
    tls: ServerTLS | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()


def _tls_section(d: dict, base: str) -> ServerTLS | None:
    unknown = set(d) - {"cert_file", "key_file", "client_auth_type", "client_ca_file",
                        "min_version", "max_version", "cipher_suites", "curve_preferences",
                        "prefer_server_cipher_suites", "client_allowed_sans"}
    if unknown:
        raise WebConfigError(f"tls_server_config: unknown field(s) {sorted(unknown)}")

    def path(key: str) -> str:
        v = d.get(key) or ""
        return os.path.join(base, v) if v and not os.path.isabs(v) else v

    cert, key, ca = path("cert_file"), path("key_file"), path("client_ca_file")
    if not cert and not key:
        if ca:
            raise WebConfigError("tls_server_config: client_ca_file without cert_file/key_file")
        return None
    if not cert:
        raise WebConfigError("tls_server_config: missing cert_file")
    if not key:
        raise WebConfigError("tls_server_config: missing key_file")
    auth = d.get("client_auth_type") or ""
    if auth not in _CLIENT_AUTH:
        raise WebConfigError(f"tls_server_config: client_auth_type {auth!r} is not supported "
                             f"(one of {', '.join(a for a in _CLIENT_AUTH if a)})")
    if ca and _CLIENT_AUTH[auth] == NO_CLIENT_CERT:
        raise WebConfigError("tls_server_config: client_ca_file is set without a "
                             "client_auth_type that uses it")
    version = d.get("min_version") or "TLS12"
    if version not in _TLS_VERSIONS:
        raise WebConfigError(f"tls_server_config: unknown min_version {version!r}")
    tls = ServerTLS(cert=cert, key=key, client_ca=ca, min_version=_TLS_VERSIONS[version],
                    client_auth=_CLIENT_AUTH[auth])
    try:
        tls.validate("tls_server_config")
    except TLSConfigError as e:
        raise WebConfigError(str(e)) from None
    return tls


def parse_web_config(text: str, base_dir: str = ".") -> WebConfig:
    """A WebConfig from the file's text; relative file names are relative to ``base_dir``."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise WebConfigError(f"not YAML: {e}") from None
    if not isinstance(doc, dict):
        raise WebConfigError("the web config must be a mapping")
    unknown = set(doc) - {"tls_server_config", "http_server_config", "basic_auth_users"}
    if unknown:
        raise WebConfigError(f"unknown field(s) {sorted(unknown)}")
    tls_d = doc.get("tls_server_config") or {}
    http_d = doc.get("http_server_config") or {}
    users_d = doc.get("basic_auth_users") or {}
    if not all(isinstance(x, dict) for x in (tls_d, http_d, users_d)):
        raise WebConfigError("tls_server_config, http_server_config and basic_auth_users "
                             "must be mappings")
    users: dict[str, bytes] = {}
    for name, hashed in users_d.items():
        h = str(hashed or "").encode()
        if not h.startswith((b"$2a$", b"$2b$", b"$2y$")):
            raise WebConfigError(f"basic_auth_users: password of {name!r} is not a bcrypt hash")
        users[str(name)] = h
    headers_d = http_d.get("headers") or {}
    if not isinstance(headers_d, dict):
        raise WebConfigError("http_server_config.headers must be a mapping")
    headers = []
    for k, v in headers_d.items():
        canon = next((h for h in _HEADERS if h.lower() == str(k).lower()), None)
        if canon is None:
            raise WebConfigError(f"HTTP header {k!r} can not be configured")
        if any(c in str(v) for c in "\r\n"):
            raise WebConfigError(f"HTTP header {k!r}: value has a line break")
        allowed = _HEADERS[canon]
        if allowed and str(v) not in allowed:
            raise WebConfigError(f"invalid value for {canon}: expected one of {list(allowed)}, "
                                 f"got {str(v)!r}")
        headers.append((canon, str(v)))
    return WebConfig(_tls_section(tls_d, base_dir), users, tuple(headers))


def load_web_config(path: str) -> WebConfig:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise WebConfigError(f"reading {path}: {e}") from None
    return parse_web_config(text, os.path.dirname(os.path.abspath(path)))


def verifies_clients(path: str) -> bool:
    """Whether the --http.config file at ``path`` ("" for none) has its server verify client
    certificates (client_ca_file): what the tenant-certificate-field flags need. WebConfigError
    for a file that does not load."""
    web = load_web_config(path).tls if path else None
    return bool(web and web.client_ca)


class WebConfigFile:
    """The ``--http.config`` file, re-read when it changes; an unusable edit keeps the last
    good configuration. Shared by every HTTP server of a process."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._config = load_web_config(path)  # a bad file at start is a start-up error
        self._stat = self._stat_now()
        self._checked = time.monotonic()

    def _stat_now(self):
        try:
            st = os.stat(self.path)
            return st.st_mtime_ns, st.st_size, st.st_ino
        except OSError:
            return None

    def current(self) -> WebConfig:
        now = time.monotonic()
        if now - self._checked >= RECHECK_S:
            self._checked = now
            st = self._stat_now()
            if st != self._stat:
                self._stat = st
                try:
                    self._config = load_web_config(self.path)
                    log.info("web config reloaded", extra={"file": self.path})
                except WebConfigError as e:
                    log.error("web config reload failed, keeping the previous one",
                              extra={"file": self.path, "err": str(e)})
        return self._config


class BasicAuth:
    """Checks ``Authorization: Basic`` against the current users (see module docstring)."""

    def __init__(self, max_waiting: int = MAX_WAITING_CHECKS) -> None:
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._max_waiting = max_waiting

    @staticmethod
    def _credentials(header: str) -> tuple[str, str] | None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (user, password) if sep else None

    async def check(self, users: dict[str, bytes], header: str) -> bool | None:
        """True: allowed; False: wrong credentials; None: too many checks waiting."""
        creds = self._credentials(header)
        if creds is None:
            return False
        user, password = creds
        hashed = users.get(user)
        known = hashed is not None
        hashed = hashed if known else _DUMMY_HASH
        key = b"".join(hashlib.sha256(x).digest() for x in (user.encode(), hashed, password.encode()))
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        if self._waiting >= self._max_waiting:
            return None
        self._waiting += 1
        try:
            async with self._lock:  # one bcrypt at a time, off the event loop
                hit = self._cache.get(key)  # the same credentials may have been checked meanwhile
                if hit is not None:
                    return hit
                ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), hashed)
                ok = ok and known
                self._cache[key] = ok
        finally:
            self._waiting -= 1
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return ok


def web_middleware(source: WebConfigFile):
    """An aiohttp middleware applying the web config's basic auth and headers."""
    auth = BasicAuth()

    @web.middleware
    async def middleware(request: web.Request, handler):
        cfg = source.current()
        if cfg.users:
            ok = await auth.check(cfg.users, request.headers.get("Authorization", ""))
            if ok is None:
                return web.Response(status=429, text="too many authentication attempts\n")
            if not ok:
                return web.Response(status=401, text="Unauthorized\n",
                                    headers={"WWW-Authenticate": "Basic"})
        try:
            resp = await handler(request)
        except web.HTTPException as e:
            for k, v in cfg.headers:
                e.headers[k] = v
            raise
        for k, v in cfg.headers:
            resp.headers[k] = v
        return resp

    return middleware
