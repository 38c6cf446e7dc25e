"""TLS for IEC 104 links as IEC 62351-3 profiles it: the settings and the contexts.

:class:`TLS` names the files (certificate, key, CA, CRL) and the policy (mutual
authentication, TLS 1.2 and 1.3, the IEC 62351-3 cipher suites the platform has, an
allow-list of peer certificates) and builds the :class:`ssl.SSLContext` of either side. A
ready ``ssl.SSLContext`` is accepted wherever a :class:`TLS` is. Session resumption and the
TLS 1.3 key update are Python's (OpenSSL's) defaults; renegotiation is off (OpenSSL's
default for TLS 1.2 with Python, and absent from TLS 1.3).

:func:`describe` turns a failed handshake into one line that names the reason. A key
password is kept as a :class:`~iec104.importhooks.Secret`: never in a repr, an error or a log.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import re
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, cast

from iec104.errors import SettingsError

__all__ = ["TLS", "IEC62351_CIPHERS", "context_of", "describe", "fingerprint", "peer_info",
           "check_peer", "TLSServer"]

log = logging.getLogger("iec104.tls")

IEC62351_CIPHERS = (
    # IEC 62351-3 ed. 2 (TLS 1.2): ECDHE with AES-GCM, ECDSA or RSA certificates, strongest first
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-AES128-GCM-SHA256",
)
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def _version(v: Any) -> ssl.TLSVersion:
    if isinstance(v, ssl.TLSVersion):
        return v
    key = str(v).lower().removeprefix("tlsv").removeprefix("tls").strip("_ ").replace("_", ".")
    if key not in _VERSIONS:
        raise SettingsError(f"TLS version {v!r}: 1.2 or 1.3")
    return _VERSIONS[key]


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, lower-case hex without separators."""
    return hashlib.sha256(der).hexdigest()


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)


def _looks_secret(text: str) -> bool:
    """A str that may be PEM or key text rather than a path: never echoed in an error."""
    return "-----" in text or "\n" in text or "\r" in text or len(text) > 1024


def _is_der(der: bytes) -> bool:
    """A DER SEQUENCE whose length is the data's: a certificate's outer shape."""
    if len(der) < 2 or der[0] != 0x30:
        return False
    n = der[1]
    if n < 0x80:
        return 2 + n == len(der)
    k = n & 0x7F
    if not 1 <= k <= 4 or len(der) < 2 + k:
        return False
    return 2 + k + int.from_bytes(der[2:2 + k], "big") == len(der)


def _certificates(data: bytes) -> list[bytes]:
    """The DER certificates of a file's content: its CERTIFICATE blocks (keys, "Bag
    Attributes" and other blocks ignored) or the file itself as DER. ValueError (with no
    content in its message) if there is none or one is corrupt."""
    if b"-----BEGIN" not in data:
        if not _is_der(data):
            raise ValueError("neither a PEM nor a DER certificate")
        return [data]
    out: list[bytes] = []
    for m in _PEM_CERT.finditer(data):
        try:
            der = base64.b64decode(re.sub(rb"\s+", b"", m.group(1)), validate=True)
        except (binascii.Error, ValueError):
            der = b""
        if not _is_der(der):
            raise ValueError(f"certificate {len(out) + 1} in it is corrupt")
        out.append(der)
    if not out:
        raise ValueError("no certificate in it")
    return out


def _fingerprints(allowed: Iterable[Any]) -> frozenset[str]:
    """Hex fingerprints (colons and case ignored), DER bytes, or paths of PEM/DER files.

    SettingsError naming the file (never its content, never a str that looks like PEM text)
    for a file that cannot be read or holds no certificate or a corrupt one."""
    out = set()
    for a in allowed:
        if isinstance(a, (bytes, bytearray)):
            out.add(fingerprint(bytes(a)))
            continue
        text = str(a)
        hexed = text.replace(":", "").strip().lower()
        if len(hexed) == 64 and all(c in "0123456789abcdef" for c in hexed):
            out.add(hexed)
            continue
        try:
            data = Path(text).read_bytes()
        except (OSError, ValueError) as e:          # ValueError: a NUL in the str
            if _looks_secret(text):
                raise SettingsError("TLS allowed certificate: not a file (PEM text?); "
                                    "give a file, a SHA-256 fingerprint or DER bytes") from None
            why = e.strerror if isinstance(e, OSError) and e.strerror else "not a file"
            raise SettingsError(f"TLS allowed certificate {text}: {why}") from None
        try:
            out.update(fingerprint(der) for der in _certificates(data))
        except ValueError as e:
            raise SettingsError(f"TLS allowed certificate {text}: {e}") from None
    return frozenset(out)


@dataclass(frozen=True)
class TLS:
    """TLS settings of one side of a link (master or outstation).

    Parameters
    ----------
    cert, key : path, optional
        Our certificate chain (PEM) and its private key (in ``cert`` when ``key`` is None).
        An outstation needs one; a master too under mutual authentication (the default).
    ca : path, optional
        The CA certificate(s) (PEM file or a directory) that sign the peers' certificates;
        None: the system's store.
    crl : path, optional
        A certificate revocation list (PEM): the peer's certificate is checked against it
        (the CA's CRL must be there; a missing CRL fails the handshake).
    allowed : iterable, optional
        Only these peer certificates (like c104's ``only_known``): SHA-256 fingerprints
        (hex), DER bytes or certificate files; checked after the handshake.
    min_version, max_version : "1.2", "1.3" or ssl.TLSVersion
    server_hostname : str, optional
        The name the outstation's certificate must carry (master side; default: the host
        connected to).
    verify : bool
        Check the peer's certificate (and, on the master side, its name); on the outstation
        side require a client certificate. False is for tests only.
    password : str, optional
        The key's password; never shown.
    ciphers : str, optional
        An OpenSSL cipher list for TLS 1.2 instead of :data:`IEC62351_CIPHERS`.
    """

    cert: str | Path | None = None
    key: str | Path | None = None
    ca: str | Path | None = None
    crl: str | Path | None = None
    allowed: tuple[Any, ...] | None = None
    min_version: Any = ssl.TLSVersion.TLSv1_2
    max_version: Any = ssl.TLSVersion.TLSv1_3
    server_hostname: str | None = None
    verify: bool = True
    password: Any = field(default=None, repr=False, compare=False)
    ciphers: str | None = None

    def __post_init__(self) -> None:
        from iec104.importhooks import Secret
        if self.password is not None and not isinstance(self.password, Secret):
            object.__setattr__(self, "password", Secret(self.password))
        if self.allowed is not None:
            items = [self.allowed] if isinstance(self.allowed, (str, bytes, Path)) else self.allowed
            object.__setattr__(self, "allowed", tuple(items))
        lo, hi = _version(self.min_version), _version(self.max_version)
        if lo > hi:
            raise SettingsError("TLS min_version is above max_version")
        object.__setattr__(self, "min_version", lo)
        object.__setattr__(self, "max_version", hi)

    @property
    def fingerprints(self) -> frozenset[str] | None:
        return None if self.allowed is None else _fingerprints(self.allowed)

    def _base(self, purpose: ssl.Purpose) -> ssl.SSLContext:
        proto = ssl.PROTOCOL_TLS_CLIENT if purpose is ssl.Purpose.SERVER_AUTH else ssl.PROTOCOL_TLS_SERVER
        ctx = ssl.SSLContext(proto)
        ctx.minimum_version, ctx.maximum_version = self.min_version, self.max_version
        ctx.options |= ssl.OP_NO_COMPRESSION
        if hasattr(ssl, "OP_NO_RENEGOTIATION"):
            ctx.options |= ssl.OP_NO_RENEGOTIATION
        self._set_ciphers(ctx)
        if self.cert is not None:
            try:
                ctx.load_cert_chain(str(self.cert), None if self.key is None else str(self.key),
                                    password=None if self.password is None else self.password.reveal())
            except (OSError, ssl.SSLError) as e:
                what = f"{self.cert}" + (f" / {self.key}" if self.key is not None else "")
                raise SettingsError(f"TLS certificate/key {what}: cannot be loaded "
                                    f"({getattr(e, 'strerror', None) or type(e).__name__}; a wrong "
                                    "key, a wrong password or not PEM)") from None
        elif self.key is not None:
            raise SettingsError("TLS key given without a certificate")
        try:
            if self.ca is not None:
                p = Path(self.ca)
                ctx.load_verify_locations(capath=str(p)) if p.is_dir() else \
                    ctx.load_verify_locations(cafile=str(p))
            elif self.verify:
                ctx.load_default_certs(purpose)
            if self.crl is not None:
                ctx.load_verify_locations(cafile=str(self.crl))
                ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        except (OSError, ssl.SSLError) as e:
            raise SettingsError(f"TLS CA/CRL {self.ca or ''} {self.crl or ''}: cannot be loaded "
                                f"({getattr(e, 'strerror', None) or e})") from None
        return ctx

    def _set_ciphers(self, ctx: ssl.SSLContext) -> None:
        """The IEC 62351-3 suites the platform has (TLS 1.2; TLS 1.3 suites are OpenSSL's)."""
        if self.ciphers is not None:
            try:
                ctx.set_ciphers(self.ciphers)
            except ssl.SSLError:
                raise SettingsError(f"TLS ciphers {self.ciphers!r}: none available") from None
            return
        have = [c for c in IEC62351_CIPHERS if _available(c)]
        if have:
            ctx.set_ciphers(":".join(have))

    def client_context(self) -> ssl.SSLContext:
        """The master's context: verifies the outstation (and its name), presents ``cert``."""
        ctx = self._base(ssl.Purpose.SERVER_AUTH)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def server_context(self) -> ssl.SSLContext:
        """The outstation's context: requires and verifies a client certificate."""
        if self.cert is None:
            raise SettingsError("TLS on an outstation needs a certificate (cert=)")
        ctx = self._base(ssl.Purpose.CLIENT_AUTH)
        ctx.verify_mode = ssl.CERT_REQUIRED if self.verify else ssl.CERT_NONE
        return ctx


def _available(cipher: str) -> bool:
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.set_ciphers(cipher)
    except ssl.SSLError:
        return False
    return True


def context_of(tls: "TLS | ssl.SSLContext | None", *, server: bool
               ) -> tuple[ssl.SSLContext | None, TLS | None]:
    """The context of one side and the settings it came from (None for a ready context)."""
    if tls is None:
        return None, None
    if isinstance(tls, ssl.SSLContext):
        return tls, None
    if isinstance(tls, TLS):
        return (tls.server_context() if server else tls.client_context()), tls
    raise SettingsError(f"tls {type(tls).__name__}: expected iec104.TLS or ssl.SSLContext")


def ssl_object(transport: asyncio.BaseTransport | None) -> ssl.SSLObject | None:
    if transport is None:
        return None
    obj: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
    return obj


def check_peer(transport: asyncio.BaseTransport | None, fingerprints: frozenset[str] | None) -> str | None:
    """None if the peer's certificate is allowed, else the reason (one line)."""
    if not fingerprints:
        return None
    obj = ssl_object(transport)
    der = obj.getpeercert(binary_form=True) if obj is not None else None
    if not der:
        return "TLS: the peer sent no certificate (an allow-list is set)"
    fp = fingerprint(der)
    if fp not in fingerprints:
        return f"TLS: the peer's certificate (SHA-256 {fp[:16]}...) is not in the allow-list"
    return None


def _name(rdns: Any) -> str:      # a certificate's subject: ((("CN", "x"),), ...) or None
    return ", ".join(f"{k}={v}" for rdn in rdns or () for k, v in rdn)


def peer_info(tls: "TLS | ssl.SSLContext | None",
              transport: asyncio.BaseTransport | None) -> dict[str, Any] | None:
    """A session's TLS for its status: None when plain; else ``on`` (True), the version,
    cipher, the peer certificate's subject and expiry (``peer_not_after`` as the certificate
    says it, ``peer_expires`` in seconds since the epoch), each None while not connected."""
    if tls is None:
        return None
    obj = ssl_object(transport)
    cert = (obj.getpeercert() if obj is not None else None) or {}
    c = obj.cipher() if obj is not None else None
    after = cert.get("notAfter")
    return {"on": True, "version": obj.version() if obj is not None else None,
            "cipher": c[0] if c else None,
            "peer_subject": _name(cert.get("subject")) or None, "peer_not_after": after,
            "peer_expires": ssl.cert_time_to_seconds(after) if isinstance(after, str) else None}


_REASONS = {        # OpenSSL reasons (SSLError.reason) -> what they mean for an operator
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the peer requires a client certificate and got none",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the client sent no certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer refused our certificate: expired",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer refused our certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the peer refused our certificate",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "the peer refused our certificate: revoked",
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not know the CA of our certificate",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common",
    "UNSUPPORTED_PROTOCOL": "no TLS version in common",
    "NO_PROTOCOLS_AVAILABLE": "no TLS version in common",
    "NO_SHARED_CIPHER": "no cipher suite in common",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the handshake failed (no cipher suite or version in common?)",
    "WRONG_VERSION_NUMBER": "the peer does not speak TLS",
    "HTTP_REQUEST": "the peer does not speak TLS",
    "UNEXPECTED_EOF_WHILE_READING": "the peer closed during the TLS handshake",
    "RECORD_LAYER_FAILURE": "the peer does not speak TLS",
}


def describe(exc: BaseException) -> str:
    """One line naming why a TLS handshake (or the first TLS record) failed."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        msg = exc.verify_message or exc.reason or "verification failed"
        code = exc.verify_code
        if code == 10:
            why = "expired"
        elif code in (2, 18, 19, 20, 21):
            why = "unknown CA (not signed by a trusted CA)"
        elif code == 62 or "hostname mismatch" in str(msg).lower() or "ip address mismatch" in str(msg).lower():
            why = "wrong host name"
        elif code == 23:
            why = "revoked"
        elif code == 3:
            why = "no CRL for its CA"
        elif code == 9:
            why = "not yet valid"
        else:
            why = "rejected"
        return f"TLS: the peer's certificate is refused: {why} ({msg})"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        text = _REASONS.get(reason)
        if text is None:
            text = str(exc.args[1] if len(exc.args) > 1 else exc).splitlines()[0] if exc.args else type(exc).__name__
        return f"TLS: {text}" + (f" ({reason})" if reason and reason not in text else "")
    if isinstance(exc, ConnectionResetError):
        return "TLS: the peer reset the connection during the handshake (not a TLS peer?)"
    if isinstance(exc, ConnectionAbortedError) and "handshake" in str(exc).lower():
        return "TLS: handshake timed out"
    return f"TLS: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"



class TLSServer:
    """A TLS listener that knows about every failed handshake: each accepted socket is
    handed to ``connect_accepted_socket(ssl=...)``, whose handshake raises on failure
    (``create_server(ssl=...)`` drops failed handshakes without a word, on asyncio and on
    uvloop). A client that fails the handshake or the allow-list is reported to
    ``failed(reason, peer)`` and closed; the other clients are not touched. Quacks like the
    ``asyncio.Server`` an outstation keeps: ``sockets``, ``close()``, ``wait_closed()``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, context: ssl.SSLContext,
                 make: Callable[[], asyncio.BaseProtocol], failed: Callable[[str, str], None],
                 allowed: frozenset[str] | None = None, timeout: float = 10.0):
        self.loop, self.context, self.make, self.failed = loop, context, make, failed
        self.allowed, self.timeout = allowed, timeout
        self.sockets: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting: asyncio.Task[None] | None = None

    async def listen(self, host: str, port: int, backlog: int = 4096) -> "TLSServer":
        infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                            flags=socket.AI_PASSIVE)
        family = infos[0][0] if infos else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=backlog)
        sock.setblocking(False)
        self.sockets = [sock]
        self._accepting = self.loop.create_task(self._accept(sock))
        return self

    async def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, addr = await self.loop.sock_accept(sock)
            except OSError as e:
                if sock.fileno() < 0:
                    return
                log.warning("TLS listener: accept: %s", e)
                await asyncio.sleep(0.1)
                continue
            t = self.loop.create_task(self._handshake(conn, "%s:%s" % addr[:2]))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _handshake(self, conn: socket.socket, peer: str) -> None:
        refused: list[str] = []

        def make() -> asyncio.BaseProtocol:
            proto = self.make()
            if self.allowed:
                made = proto.connection_made

                def connection_made(transport: asyncio.BaseTransport) -> None:
                    why = check_peer(transport, self.allowed)
                    if why is None:
                        return made(transport)
                    refused.append(why)
                    # this instance only: the refused connection closes without a word
                    proto.connection_lost = lambda exc: None  # type: ignore[method-assign]
                    # a socket's transport (connect_accepted_socket): a stream, it has abort()
                    cast(asyncio.Transport, transport).abort()

                # this instance only: the allow-list is checked before the protocol sees it
                proto.connection_made = connection_made  # type: ignore[method-assign]
            return proto

        try:
            await self.loop.connect_accepted_socket(make, conn, ssl=self.context,
                                                    ssl_handshake_timeout=self.timeout)
        except asyncio.CancelledError:
            conn.close()
            raise
        except Exception as e:              # SSLError, a reset, the handshake timeout
            conn.close()
            self.failed(describe(e), peer)
            return
        if refused:
            self.failed(refused[0], peer)

    def close(self) -> None:
        for s in self.sockets:
            s.close()
        if self._accepting is not None:
            self._accepting.cancel()
        for t in list(self._tasks):
            t.cancel()

    async def wait_closed(self) -> None:
        for t in [self._accepting, *self._tasks]:
            if t is not None:
                try:
                    await t
                except (asyncio.CancelledError, Exception):
                    pass
