"""Password hashes for `web.users`: stdlib scrypt (RFC 7914), no extra dependency.

A hash is one self-describing string, printed by `vigil web hash-password`:

    scrypt$n=32768,r=8,p=1$<salt, base64>$<key, base64>

Parameters are read back from the string (so they can be raised later without invalidating older
hashes) but only within bounds, so a config can never make a login cost gigabytes or minutes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from vigil.errors import VigilError

SCHEME = "scrypt"
DEFAULT_N, DEFAULT_R, DEFAULT_P = 2**15, 8, 1
KEY_BYTES, SALT_BYTES = 32, 16
_FORMAT = re.compile(
    r"^scrypt\$n=(\d{1,8}),r=(\d{1,3}),p=(\d{1,3})\$([A-Za-z0-9+/=]{16,128})\$([A-Za-z0-9+/=]{16,128})$"
)
HASH_HINT = "generate one with `vigil web hash-password` (it reads the password on stdin)"


class PasswordHashError(VigilError):
    """A password hash is not in the format `vigil web hash-password` prints."""


@dataclass(frozen=True)
class ScryptHash:
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    def __str__(self) -> str:
        salt = base64.b64encode(self.salt).decode()
        key = base64.b64encode(self.key).decode()
        return f"{SCHEME}$n={self.n},r={self.r},p={self.p}${salt}${key}"


def _derive(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    # scrypt needs 128 * r * n bytes; allow exactly that plus headroom (the default cap is 32 MiB).
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=length, maxmem=130 * r * n + 2**20)


def parse_hash(text: str) -> ScryptHash:
    """The parsed hash; `PasswordHashError` (never echoing the text) if it is not one we print."""
    match = _FORMAT.match(text.strip())
    if match is None:
        raise PasswordHashError(f"password_hash is not a hash `vigil web hash-password` prints; {HASH_HINT}")
    n, r, p = (int(match.group(i)) for i in (1, 2, 3))
    if n < 2**14 or n > 2**20 or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise PasswordHashError(
            f"password_hash has scrypt parameters out of bounds (n a power of 2 in 2^14..2^20, r 1..32, p 1..16); "
            f"{HASH_HINT}"
        )
    try:
        salt = base64.b64decode(match.group(4), validate=True)
        key = base64.b64decode(match.group(5), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PasswordHashError(f"password_hash has invalid base64; {HASH_HINT}") from exc
    if len(salt) < 8 or len(key) < 16:
        raise PasswordHashError(f"password_hash has a salt or key that is too short; {HASH_HINT}")
    return ScryptHash(n, r, p, salt, key)


def hash_password(password: str, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P) -> str:
    if not password:
        raise PasswordHashError("the password is empty")
    salt = secrets.token_bytes(SALT_BYTES)
    return str(ScryptHash(n, r, p, salt, _derive(password, salt, n, r, p, KEY_BYTES)))


def verify_password(password: str, stored: ScryptHash) -> bool:
    """Constant-time comparison of the derived key with the stored one."""
    candidate = _derive(password, stored.salt, stored.n, stored.r, stored.p, len(stored.key))
    return hmac.compare_digest(candidate, stored.key)
