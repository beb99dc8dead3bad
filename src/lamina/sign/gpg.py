"""OpenPGP through the ``gpg`` binary (python-gnupg), the same keyrings skopeo and podman use.

Signing takes the secret key from ``GNUPGHOME`` (or gpg's default home) and never sees it:
gpg-agent holds it. A passphrase, when the key has one, comes from ``LAMINA_GPG_PASSPHRASE``
(or an agent that already has it) and goes to gpg on a pipe; it is never printed, and gpg's
own messages are not echoed, only its one-word status. Verifying imports the public key
file into a throwaway home, so the user's keyring neither decides nor changes the answer.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from lamina.errors import InputError, LaminaError, UsageError
from lamina.limits import TooLarge, read_limited

MAX_SIGNATURE = 4 << 20  # signature files are a few hundred bytes; more is hostile
MAX_PUBKEY = 4 << 20
_BAD_PASSPHRASE = 11  # libgpg-error's GPG_ERR_BAD_PASSPHRASE, in the low 16 bits of a FAILURE code
_FINGERPRINT = re.compile(r"^(?:0x)?([0-9A-Fa-f]{16}|[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$")


class SigningError(LaminaError):
    """A signature could not be made: no gpg, no such secret key, a wrong passphrase."""


def _gpg(home: str | None) -> Any:
    if shutil.which("gpg") is None:
        raise SigningError("the gpg binary is not installed (Debian: apt-get install gnupg)")
    import gnupg  # type: ignore[import-untyped]  # python-gnupg ships no type hints

    try:
        return gnupg.GPG(gpgbinary="gpg", gnupghome=home)
    except (OSError, ValueError) as exc:
        raise SigningError(f"cannot run gpg: {exc}") from None


def parse_fingerprint(text: str) -> str:
    match = _FINGERPRINT.match(text.strip())
    if not match:
        raise UsageError(f"bad --gpg-key {text!r}: expected a key fingerprint (40 hex digits) or long key id")
    return match[1].upper()


def _matches(key: dict[str, Any], wanted: str) -> str | None:
    """The fingerprint of the (sub)key of ``key`` that ``wanted`` names, if any."""
    candidates = [key.get("fingerprint", "")] + [sub[2] for sub in key.get("subkeys", []) if len(sub) > 2]
    for fpr in candidates:
        if fpr and fpr.upper().endswith(wanted):
            return str(fpr).upper()
    return None


def sign(payload: bytes, fingerprint: str) -> bytes:
    """An OpenPGP signed message (binary, not detached) over ``payload``."""
    home = os.environ.get("GNUPGHOME") or None
    gpg = _gpg(home)
    wanted = parse_fingerprint(fingerprint)
    found = [f for k in gpg.list_keys(secret=True) if (f := _matches(k, wanted))]
    where = f"GNUPGHOME={home}" if home else "gpg's default home"
    if not found:
        raise SigningError(f"no secret key {wanted} in {where}")
    if len(found) > 1:
        raise SigningError(f"key id {wanted} is ambiguous in {where}: give the full fingerprint")
    passphrase = os.environ.get("LAMINA_GPG_PASSPHRASE")  # None: the key has none, or the agent knows it
    result = gpg.sign(payload, keyid=found[0], binary=True, clearsign=False, detach=False, passphrase=passphrase,
                      extra_args=["--pinentry-mode", "loopback"])
    if result.status != "signature created" or not result.data:
        # gpg's stderr is never echoed (it names files and keys, and is noisy); its status decides.
        status = str(result.stderr or "")
        failures = {int(m[1]) & 0xFFFF for m in re.finditer(r"^\[GNUPG:\] FAILURE \S+ (\d+)", status, re.M)}
        if "NEED_PASSPHRASE" in status and passphrase is None:
            reason = "the key needs a passphrase (set LAMINA_GPG_PASSPHRASE)"
        elif _BAD_PASSPHRASE in failures or "BAD_PASSPHRASE" in status:
            reason = "wrong passphrase in LAMINA_GPG_PASSPHRASE"
        elif "KEYEXPIRED" in status or "EXPKEYSIG" in status:
            reason = "the key has expired"
        else:
            reason = "gpg failed"
        raise SigningError(f"cannot sign with {found[0]}: {reason}")
    return bytes(result.data)


@attrs.frozen
class Verified:
    payload: bytes
    fingerprint: str  # the primary key's


@contextlib.contextmanager
def keyring(pubkey: Path) -> Iterator[Keyring]:
    """The public keys of one file, in a throwaway home that is removed (agent too) after."""
    try:
        with open(pubkey, "rb") as f:
            data = read_limited(f, MAX_PUBKEY)
    except OSError as exc:
        raise InputError(f"cannot read the public key {str(pubkey)!r}: {exc.strerror}") from None
    except TooLarge:
        raise InputError(f"{pubkey}: too large for a public key file") from None
    home = tempfile.mkdtemp(prefix="lamina-gpg-")
    try:
        gpg = _gpg(home)
        imported = gpg.import_keys(data)
        if gpg.list_keys(secret=True):
            raise InputError(f"{pubkey}: holds a private key; give the public key only (gpg --export)")
        if not any(r.get("fingerprint") for r in imported.results):
            raise InputError(f"{pubkey}: no OpenPGP public key in it")
        primaries = {str(k["fingerprint"]).upper(): {str(k["fingerprint"]).upper()}
                     | {str(s[2]).upper() for s in k.get("subkeys", []) if len(s) > 2}
                     for k in gpg.list_keys()}
        yield Keyring(gpg, primaries)
    finally:
        if shutil.which("gpgconf"):
            subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=30, check=False)
        shutil.rmtree(home, ignore_errors=True)


@attrs.frozen
class Keyring:
    gpg: Any
    keys: dict[str, set[str]]  # primary fingerprint -> it and its subkeys' fingerprints

    def verify(self, message: bytes) -> Verified | None:
        """The signed payload and its signer, if the message is validly signed by one of our keys."""
        if len(message) > MAX_SIGNATURE:
            return None
        result = self.gpg.decrypt(message, extra_args=["--max-output", str(MAX_SIGNATURE)])
        if not result.valid or not result.data:
            return None
        signer = str(result.fingerprint or "").upper()
        for primary, fingerprints in self.keys.items():
            if signer in fingerprints:
                return Verified(bytes(result.data), primary)
        return None
