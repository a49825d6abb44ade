"""Beckn HTTP message signing (BECKN-006): BLAKE2b-512 digest of the raw body, ed25519 over the signing string.

Authorization: Signature keyId="{subscriber_id}|{unique_key_id}|ed25519",algorithm="ed25519",
               created="{unix}",expires="{unix}",headers="(created) (expires) digest",signature="{base64}"
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SIGNED_HEADERS = "(created) (expires) digest"
_PARAM = re.compile(r'(\w+)="([^"]*)"')


class BecknAuthError(ValueError):
    """Why a request's signature is not accepted (the NACK message)."""


def digest(body: bytes) -> str:
    """BLAKE2b-512 of the exact body bytes, base64."""
    return base64.b64encode(hashlib.blake2b(body, digest_size=64).digest()).decode()


def signing_string(created: int, expires: int, body: bytes) -> bytes:
    """The three lines that are signed."""
    return f"(created): {created}\n(expires): {expires}\ndigest: BLAKE-512={digest(body)}".encode()


def public_key_b64(seed_b64: str) -> str:
    """The base64 raw public key of a base64 32-byte ed25519 seed."""
    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed_b64))
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def new_seed() -> str:
    """A new base64 32-byte ed25519 seed (the private key, as Beckn-ONIX stores it)."""
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    key = Ed25519PrivateKey.generate()
    return base64.b64encode(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())).decode()


def authorization(seed_b64: str, subscriber_id: str, key_id: str, body: bytes, created: int, ttl: int = 30) -> str:
    """The Authorization header value for a body we send."""
    expires = created + ttl
    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed_b64))
    signature = base64.b64encode(key.sign(signing_string(created, expires, body))).decode()
    return (
        f'Signature keyId="{subscriber_id}|{key_id}|ed25519",algorithm="ed25519",created="{created}",'
        f'expires="{expires}",headers="{SIGNED_HEADERS}",signature="{signature}"'
    )


@dataclass(frozen=True)
class SignatureHeader:
    """The parsed parts of an Authorization: Signature header."""

    subscriber_id: str
    key_id: str
    key_algorithm: str
    algorithm: str
    created: int
    expires: int
    headers: str
    signature: bytes


def parse(header: str | None) -> SignatureHeader:
    """Parse the header, or raise BecknAuthError saying what is wrong with it."""
    if not header or not header.startswith("Signature "):
        raise BecknAuthError("missing Authorization: Signature header")
    params = dict(_PARAM.findall(header))
    try:
        subscriber_id, key_id, key_algorithm = params["keyId"].split("|")
        return SignatureHeader(
            subscriber_id,
            key_id,
            key_algorithm,
            params["algorithm"],
            int(params["created"]),
            int(params["expires"]),
            params.get("headers", ""),
            base64.b64decode(params["signature"]),
        )
    except (KeyError, ValueError) as exc:
        raise BecknAuthError(f"malformed Signature header: {exc}") from None


def verify(header: str | None, body: bytes, lookup, now: int) -> SignatureHeader:
    """Check a request's signature; `lookup(subscriber_id, key_id)` gives the base64 public key or None.

    Rejects: no header, algorithm mismatch, unknown key, `created` in the future, `expires` past, bad signature.
    """
    parsed = parse(header)
    if parsed.algorithm != "ed25519" or parsed.key_algorithm != "ed25519":
        raise BecknAuthError(f"algorithm {parsed.algorithm!r} is not ed25519")
    if parsed.headers and parsed.headers != SIGNED_HEADERS:
        raise BecknAuthError(f"signed headers must be {SIGNED_HEADERS!r}")
    public = lookup(parsed.subscriber_id, parsed.key_id)
    if public is None:
        raise BecknAuthError(f"unknown key {parsed.subscriber_id}|{parsed.key_id}")
    if parsed.created > now + 5:  # a few seconds of clock skew
        raise BecknAuthError("created is in the future")
    if parsed.expires < now:
        raise BecknAuthError("the signature has expired")
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(public)).verify(
            parsed.signature, signing_string(parsed.created, parsed.expires, body)
        )
    except (InvalidSignature, ValueError):
        raise BecknAuthError("bad signature") from None
    return parsed
