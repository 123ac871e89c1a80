"""Password hashing for admin logins: scrypt with a random salt.

Unlike API keys, passwords are chosen by people and can be guessed, so they
are stored under a deliberately slow, memory-hard KDF. Hashing is CPU work of
tens of milliseconds: call these from a worker thread, never the event loop.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

# scrypt cost: N=2**14, r=8 needs 16 MiB and tens of milliseconds per guess,
# the interactive-login setting recommended for scrypt.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
HASH_BYTES = 32
SALT_BYTES = 16
# Above OpenSSL's 32 MiB default so the limits above, and stored hashes made
# with up to twice their cost, always verify.
SCRYPT_MAX_MEMORY = 64 * 1024 * 1024

_SCHEME = "scrypt"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogateescape"),
        salt=salt, n=n, r=r, p=p, dklen=HASH_BYTES, maxmem=SCRYPT_MAX_MEMORY,
    )


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (salt and hash in base64)."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"{_SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches ``stored``; False for a malformed hash.

    The final comparison takes constant time.
    """
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != _SCHEME:
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = _scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def dummy_hash() -> str:
    """A hash to verify against when the user does not exist, so an unknown
    name costs as much time as a wrong password and names cannot be found by
    timing."""
    return hash_password(secrets.token_urlsafe(16))


def generate_password() -> str:
    """A random password for the bootstrap admin (128 bits)."""
    return secrets.token_urlsafe(16)
