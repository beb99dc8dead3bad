"""containers/image "simple signing": what skopeo, podman and CRI-O verify under ``signedBy``.

A signature is an OpenPGP signed message whose content is a JSON payload::

    {"critical": {"identity": {"docker-reference": "HOST/REPO:TAG"},
                  "image": {"docker-manifest-digest": "sha256:..."},
                  "type": "atomic container signature"},
     "optional": {"creator": "lamina 0.1.0", "timestamp": 1700000000}}

It lives in a *lookaside* directory that ``registries.d`` points at (``lookaside:
file:///DIR``), at ``DIR/REPO@sha256=HEX/signature-N``: REPO is the repository path without
the registry host, N counts from 1 and the first missing one ends the list.

Reading follows the format's own rules strictly: an unknown key in ``critical`` (or in its
``image`` / ``identity``), or a wrong ``type``, makes the signature invalid rather than
ignored, because a verifier that skipped such a key would accept claims it never checked.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import attrs

from lamina.errors import LaminaError, OutputError, UsageError
from lamina.model import Digest, Reference
from lamina.model.canonical import loads
from lamina.sign import gpg
from lamina.sign.target import Target
from lamina.version import __version__

SIGNATURE_TYPE = "atomic container signature"
MAX_SIGNATURES = 128  # per manifest; a lookaside directory with more is not one lamina wrote


class VerificationError(LaminaError):
    """No signature of the image verified (exit 1, one line saying what was checked)."""


def payload(target: Target, timestamp: int | None = None) -> bytes:
    doc = {
        "critical": {
            "identity": {"docker-reference": target.identity},
            "image": {"docker-manifest-digest": str(target.digest)},
            "type": SIGNATURE_TYPE,
        },
        "optional": {"creator": f"lamina {__version__}",
                     "timestamp": int(time.time()) if timestamp is None else timestamp},
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@attrs.frozen
class Claim:
    identity: Reference
    digest: Digest


def _exact(value: object, keys: set[str], where: str) -> dict[str, object]:
    if not isinstance(value, dict) or set(value) != keys:
        raise ValueError(f"{where} must have exactly {sorted(keys)}")
    return value


def parse_payload(data: bytes) -> Claim:
    """The claim a verified payload makes; ValueError for anything the format does not allow."""
    doc = loads(data)
    if not isinstance(doc, dict) or "critical" not in doc or not set(doc) <= {"critical", "optional"}:
        raise ValueError("not a simple-signing payload")
    critical = _exact(doc["critical"], {"identity", "image", "type"}, "critical")
    if critical["type"] != SIGNATURE_TYPE:
        raise ValueError(f"type is {critical['type']!r}, not {SIGNATURE_TYPE!r}")
    image = _exact(critical["image"], {"docker-manifest-digest"}, "critical.image")
    identity = _exact(critical["identity"], {"docker-reference"}, "critical.identity")
    if not isinstance(image["docker-manifest-digest"], str) or not isinstance(identity["docker-reference"], str):
        raise ValueError("digest and reference must be strings")
    return Claim(Reference.parse(identity["docker-reference"]), Digest.parse(image["docker-manifest-digest"]))


def signature_dir(lookaside: Path, ref: Reference, digest: Digest) -> Path:
    """``DIR/REPO@sha256=HEX``; the reference grammar keeps REPO inside DIR (no ``..``, no ``/`` ends)."""
    return lookaside / f"{ref.repository}@{digest.algorithm}={digest.hex}"


def lookaside_dir(text: str) -> Path:
    """A local lookaside directory, as a path or a ``file://`` URL (what registries.d holds)."""
    if text.startswith("file://"):
        text = text[len("file://"):]
    elif "://" in text:
        raise UsageError(f"--lookaside {text!r}: only a local directory (or file:// URL) is supported")
    return Path(text)


def write(lookaside: Path, target: Target, signature: bytes) -> Path:
    """Store one more signature beside any already there, as ``signature-N`` (first free N).

    The file appears whole (written aside, then hard-linked into place); linking refuses an
    existing name, so two signers at once take different numbers and never overwrite."""
    where = signature_dir(lookaside, target.reference, target.digest)
    try:
        where.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=where, prefix=".signature.lamina-tmp-")
    except OSError as exc:
        raise OutputError(f"cannot write into {str(where)!r}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(signature)
        os.chmod(tmp, 0o644)
        for n in range(1, MAX_SIGNATURES + 1):
            final = where / f"signature-{n}"
            try:
                os.link(tmp, final)
                return final
            except FileExistsError:
                continue
        raise OutputError(f"{where}: already holds {MAX_SIGNATURES} signatures")
    except OSError as exc:
        raise OutputError(f"cannot write into {str(where)!r}: {exc.strerror}") from None
    finally:
        os.unlink(tmp)


def signatures(lookaside: Path, target: Target) -> list[tuple[Path, bytes]]:
    """``signature-1``, ``signature-2``, ... up to the first missing one (as containers/image reads them)."""
    where = signature_dir(lookaside, target.reference, target.digest)
    found = []
    for n in range(1, MAX_SIGNATURES + 1):
        path = where / f"signature-{n}"
        try:
            with open(path, "rb") as f:
                found.append((path, f.read(gpg.MAX_SIGNATURE + 1)))
        except FileNotFoundError:
            break
        except OSError as exc:
            raise VerificationError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    return found


def sign(target: Target, fingerprint: str, lookaside: Path) -> Path:
    return write(lookaside, target, gpg.sign(payload(target), fingerprint))


def identity_matches(claimed: Reference, wanted: Reference) -> bool:
    """containers/image's default ``matchRepoDigestOrExact``: a tag must be signed as that exact
    tag; an image named by digest only needs the same repository (the digest is checked apart)."""
    if wanted.tag:
        return claimed.name == wanted.name and claimed.tag == wanted.tag and not claimed.digest
    return claimed.name == wanted.name


def verify(target: Target, pubkey: Path, lookaside: Path) -> str:
    """One line saying which key signed what; VerificationError (one line) when none does."""
    what = f"{target.reference} ({target.digest})"
    reasons: list[str] = []
    with gpg.keyring(pubkey) as keys:  # a bad key file is said first, whatever the lookaside holds
        found = signatures(lookaside, target)
        if not found:
            where = signature_dir(lookaside, target.reference, target.digest)
            raise VerificationError(f"{what}: no signature in {where}")
        for path, message in found:
            verified = keys.verify(message)
            if verified is None:
                reasons.append(f"{path.name}: not validly signed by a key in {pubkey}")
                continue
            try:
                claim = parse_payload(verified.payload)
            except (ValueError, LaminaError) as exc:  # json errors are ValueErrors too
                reasons.append(f"{path.name}: bad payload ({exc})")
                continue
            if claim.digest != target.digest:
                reasons.append(f"{path.name}: signs {claim.digest}, not this manifest")
            elif not identity_matches(claim.identity, target.reference):
                reasons.append(f"{path.name}: signs {claim.identity}, not {target.reference}")
            else:
                return f"verified {what}: {path.name} signed by {verified.fingerprint}"
    raise VerificationError(f"{what}: no valid signature ({'; '.join(reasons)})")
