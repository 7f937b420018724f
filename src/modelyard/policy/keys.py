"""Virtual API keys: ``myd_`` + 43 base62 characters (256 random bits) + a 6-character CRC32 checksum.

The checksum lets the gateway (and secret scanners) reject junk without a database read. Keys are
stored only as SHA-256 (a fast hash is right for 256-bit random secrets, not for passwords) with a
display hint (prefix + last 4); they are shown once, at creation.
"""

from __future__ import annotations

import hashlib
import secrets
import zlib

PREFIX = "myd_"
BODY_LEN = 43  # 62**43 > 2**256
CHECKSUM_LEN = 6  # 62**6 > 2**32
KEY_LEN = len(PREFIX) + BODY_LEN + CHECKSUM_LEN
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}


def _base62(number: int, width: int) -> str:
    out = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        out.append(_ALPHABET[rem])
    return "".join(reversed(out))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32((PREFIX + body).encode()), CHECKSUM_LEN)


def generate_key() -> str:
    """A new random key. Show it to its owner once; store only :func:`hash_key` of it."""
    body = _base62(secrets.randbits(256), BODY_LEN)
    return PREFIX + body + _checksum(body)


def well_formed(key: str) -> bool:
    """Shape and checksum; no database involved. Runs in constant time for a given length."""
    if len(key) != KEY_LEN or not key.startswith(PREFIX):
        return False
    body = key[len(PREFIX) : len(PREFIX) + BODY_LEN]
    if any(c not in _INDEX for c in body):
        return False
    return secrets.compare_digest(_checksum(body), key[-CHECKSUM_LEN:])


def hash_key(key: str) -> str:
    """The SHA-256 hex digest stored and looked up instead of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_hint(key: str) -> str:
    """What may be shown and logged: the prefix and the last 4 characters."""
    return f"{PREFIX}…{key[-4:]}"
