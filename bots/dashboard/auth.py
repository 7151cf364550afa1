"""Staff login for the dashboard: a password hashed at rest (scrypt), sessions as signed
expiring cookies (itsdangerous), and a CSRF token bound to each session.

The password hash has the shape `scrypt$<n>$<salt hex>$<hash hex>`
(`deskmate dashboard-password` prints one). The session cookie carries the session's
random id and its CSRF token, signed with the dashboard secret; it is refused after
`DESKMATE_DASHBOARD_SESSION` seconds. Every POST must send the CSRF token of its session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

SCRYPT_N = 2**14
COOKIE = "deskmate_session"


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The stored form of a staff password."""
    if not password:
        raise ValueError("the password is empty")
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=8, p=1, dklen=32)
    return f"scrypt${SCRYPT_N}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    """Whether `password` matches the stored hash (constant time)."""
    try:
        scheme, n, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=8, p=1, dklen=32
        )
    except ValueError:
        return False
    return hmac.compare_digest(digest.hex(), expected)


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    csrf: str


class Sessions:
    """Signs and reads session cookies."""

    def __init__(self, secret: str, max_age: float) -> None:
        self.serializer = URLSafeTimedSerializer(secret, salt="deskmate-dashboard")
        self.max_age = max_age

    def issue(self, user: str) -> str:
        return self.serializer.dumps({"user": user, "csrf": secrets.token_urlsafe(24)})

    def read(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        try:
            data = self.serializer.loads(cookie, max_age=int(self.max_age))
        except BadSignature:  # tampered or expired (SignatureExpired is a BadSignature)
            return None
        if not isinstance(data, dict):
            return None
        return Session(str(data.get("user", "")), str(data.get("csrf", "")))
