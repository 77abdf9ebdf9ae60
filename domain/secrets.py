"""Credentials at rest (a WordPress application password): Fernet tokens under a key
derived from the deployment's SECRET_KEY.

Why Fernet: authenticated encryption (AES-128-CBC plus HMAC-SHA256) from `cryptography`,
so a tampered or foreign token fails loudly instead of decrypting to garbage, and no
cipher mode or IV is chosen by hand here.

Why PBKDF2 and not the raw secret: Fernet needs 32 random-looking bytes, and SECRET_KEY is
whatever text an operator set. PBKDF2-HMAC-SHA256 at OWASP's 600,000 iterations turns any
text into a key and makes a leaked database plus a weak SECRET_KEY expensive to guess. The
salt is fixed and names the purpose: the secret is already unique per deployment, and a
per-row salt would need a column. Deriving costs ~0.3 s, so the Fernet of a secret is
cached for the process (the secret itself already lives in the settings object).

Changing SECRET_KEY makes stored tokens unreadable (`SecretUnreadable`): the user enters
the password again. Rotation without that would need a MultiFernet over old secrets.
"""

from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

KDF_SALT = b"igny8/stored-credentials/fernet/v1"
KDF_ITERATIONS = 600_000


class SecretUnreadable(Exception):
    """A token that this SECRET_KEY cannot open: tampered, or written under another key."""


@lru_cache(maxsize=4)
def _fernet(secret: str) -> Fernet:
    if not secret:
        raise ValueError("SECRET_KEY is empty: set it before storing credentials")
    kdf = PBKDF2HMAC(algorithm=SHA256(), length=32, salt=KDF_SALT, iterations=KDF_ITERATIONS)
    return Fernet(base64.urlsafe_b64encode(kdf.derive(secret.encode())))


def encrypt(text: str, secret: str) -> str:
    """A Fernet token (ASCII) of `text`; a fresh IV each time, so equal texts differ."""
    return _fernet(secret).encrypt(text.encode()).decode("ascii")


def decrypt(token: str, secret: str) -> str:
    """The text inside `token`, or `SecretUnreadable` (never the token or key in it)."""
    try:
        return _fernet(secret).decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeError) as exc:
        raise SecretUnreadable(
            "A stored credential cannot be decrypted: SECRET_KEY changed or the value was "
            "altered; enter the credential again"
        ) from exc


__all__ = ["SecretUnreadable", "decrypt", "encrypt"]
