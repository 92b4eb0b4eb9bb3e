"""API key format: ``ahk_{live|test}_{key id}_{secret}{checksum}``.

The checksum is CRC32 of everything before it, in 6 base62 digits, so a typo or a truncated paste
is refused before any database lookup, and secret scanners can match
``\\bahk_(live|test)_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}\\b`` with few false positives.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass

from .ids import encode_base62, random_base62

KEY_ID_LENGTH = 12
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
_KEY_RE = re.compile(r"^ahk_(live|test)_([0-9A-Za-z]{12})_([0-9A-Za-z]{32})([0-9A-Za-z]{6})$")


class MalformedKey(ValueError):
    pass


@dataclass(frozen=True)
class ParsedKey:
    mode: str
    key_id: str
    digest: str


def _checksum(body: str) -> str:
    return encode_base62(zlib.crc32(body.encode()), CHECKSUM_LENGTH)


def digest_of(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate(mode: str) -> tuple[str, str]:
    """A new key: returns ``(key_id, plaintext)``."""
    key_id = random_base62(KEY_ID_LENGTH)
    body = f"ahk_{mode}_{key_id}_{random_base62(SECRET_LENGTH)}"
    return key_id, body + _checksum(body)


def parse(plaintext: str) -> ParsedKey:
    match = _KEY_RE.match(plaintext)
    if match is None:
        raise MalformedKey("The API key is not in the ahk_live_… / ahk_test_… format.")
    mode, key_id, secret, checksum = match.groups()
    if _checksum(f"ahk_{mode}_{key_id}_{secret}") != checksum:
        raise MalformedKey("The API key's checksum does not match: it was mistyped or truncated.")
    return ParsedKey(mode=mode, key_id=key_id, digest=digest_of(plaintext))
