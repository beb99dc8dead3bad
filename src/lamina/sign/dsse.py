"""DSSE envelopes (secure-systems-lab/dsse v1) around the provenance statement, signed with a
cosign-format key: written beside the output and pushed as cosign's ``sha256-<hex>.att``.

The signature is ECDSA-SHA256 over the pre-authentication encoding
``DSSEv1 <len(type)> <type> <len(body)> <body>`` (lengths in decimal bytes), never over the
bare payload, so a signature cannot be replayed as one over a different payload type. The
envelope is outside the image: ECDSA signatures differ on every run, the outputs must not.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from lamina.model import Descriptor, Digest
from lamina.model.canonical import loads
from lamina.provenance import MEDIA_TYPE, PREDICATE_TYPE
from lamina.registry.options import Options
from lamina.sign.target import Target

ENVELOPE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"


def pae(payload_type: str, body: bytes) -> bytes:
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def envelope(statement: bytes, key: Any) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    signature = key.sign(pae(MEDIA_TYPE, statement), ec.ECDSA(hashes.SHA256()))
    return json.dumps({"payloadType": MEDIA_TYPE, "payload": base64.b64encode(statement).decode(),
                       "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}]}).encode()


def beside(output: Path) -> Path:
    return output.with_name(f"{output.name}.provenance.dsse.json")


def push(target: Target, data: bytes, options: Options) -> str:
    """As ``cosign attest`` lays it out: a layer of the manifest tagged ``sha256-<hex>.att``."""
    from lamina.sign.cosign import ANNOTATION, push_layer

    layer = Descriptor(ENVELOPE_MEDIA_TYPE, Digest.of_bytes(data), len(data),
                       annotations={ANNOTATION: "", "predicateType": PREDICATE_TYPE})
    return push_layer(target, f"{target.digest.algorithm}-{target.digest.hex}.att", layer, data, options)


def verify(target: Target, pub_path: Path, options: Options) -> str:
    """A DSSE envelope under ``sha256-<hex>.att``, signed by the key, whose statement is SLSA
    provenance naming this manifest as its subject; one line, or VerificationError."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from lamina.sign.cosign import _existing, attached, load_public
    from lamina.sign.simple import VerificationError

    key = load_public(pub_path)
    tag = f"{target.digest.algorithm}-{target.digest.hex}.att"
    layers = _existing(options, target, tag, ENVELOPE_MEDIA_TYPE)
    if not layers:
        raise VerificationError(f"{target.reference} ({target.digest}): no signed provenance ({tag} not found)")
    reasons: list[str] = []
    for n, _, data in attached(options, target, layers, "attestation", reasons):
        try:
            doc = loads(data)
            body = base64.b64decode(doc["payload"], validate=True)
            signatures = [base64.b64decode(s["sig"], validate=True) for s in doc["signatures"]]
            payload_type = str(doc["payloadType"])
        except (ValueError, KeyError, TypeError):
            reasons.append(f"attestation {n}: not a DSSE envelope")
            continue
        good = False
        for signature in signatures:
            try:
                key.verify(signature, pae(payload_type, body), ec.ECDSA(hashes.SHA256()))
                good = True
                break
            except InvalidSignature:
                continue
        if not good:
            reasons.append(f"attestation {n}: not signed by {pub_path}")
            continue
        try:
            statement = loads(body)
            kind = (payload_type, statement["_type"], statement["predicateType"])
            subjects = {s["digest"].get("sha256") for s in statement["subject"]}
        except (ValueError, KeyError, TypeError, AttributeError):
            reasons.append(f"attestation {n}: bad statement")
            continue
        if kind != (MEDIA_TYPE, "https://in-toto.io/Statement/v1", PREDICATE_TYPE):
            reasons.append(f"attestation {n}: not SLSA provenance")
        elif target.digest.hex not in subjects:
            reasons.append(f"attestation {n}: about another image")
        else:
            return f"SLSA provenance (attestation {n}) signed by {pub_path}"
    raise VerificationError(f"{target.reference} ({target.digest}): no valid provenance ({'; '.join(reasons)})")
