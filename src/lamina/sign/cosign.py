"""cosign-format signatures, for admission controllers (Kyverno, policy-controller, Connaisseur).

Keys: ``lamina keygen --out PREFIX`` writes an ECDSA P-256 pair, as ``cosign generate-key-pair``
does: ``PREFIX.key`` is the PKCS#8 private key encrypted in the sigstore PEM
(``ENCRYPTED SIGSTORE PRIVATE KEY``: JSON with scrypt N=32768 r=8 p=1 over the password and a
random 32-byte salt, then NaCl secretbox with a random 24-byte nonce); ``PREFIX.pub`` is the
PKIX public key. The password comes from ``LAMINA_KEY_PASSWORD`` or a prompt, and is never
printed; a wrong one fails the secretbox authentication, which says so in one line.

Signatures: the payload is the ``cosign container image signature`` JSON (the repository and
the manifest digest), signed with ECDSA-SHA256 (ASN.1 DER), pushed as the one layer
``application/vnd.dev.cosign.simplesigning.v1+json`` of the manifest tagged
``sha256-<hex>.sig`` in the image's repository, the signature base64 in the layer's
``dev.cosignproject.cosign/signature`` annotation; signatures already under that tag are kept.
There is no transparency-log entry: verifiers must be told to accept key-only signatures
(cosign: ``--insecure-ignore-tlog``; policy-controller: a key authority without ``ctlog``/
``tlog``). Needs the ``cosign`` extra (``cryptography``, ``PyNaCl``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from lamina.errors import InputError, LaminaError, OutputError, UsageError
from lamina.limits import TooLarge, read_limited
from lamina.model import Descriptor, Digest, canonical, mediatypes
from lamina.model.canonical import loads
from lamina.registry.options import Options
from lamina.sign.simple import VerificationError
from lamina.sign.target import Target

PEM_PRIVATE = "ENCRYPTED SIGSTORE PRIVATE KEY"
PEM_PRIVATE_OLD = "ENCRYPTED COSIGN PRIVATE KEY"  # what cosign wrote before sigstore's rename
SIGNATURE_TYPE = "cosign container image signature"
LAYER_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
ANNOTATION = "dev.cosignproject.cosign/signature"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 32768, 8, 1
MAX_KEY_FILE = 64 << 10
MAX_MANIFEST = 4 << 20
MAX_PAYLOAD = 1 << 20


class KeyFileError(LaminaError):
    """A key file that cannot be used: missing, malformed, or a wrong password."""


def _crypto() -> Any:
    try:
        import nacl.secret  # noqa: F401
        from cryptography.hazmat.primitives import serialization  # noqa: F401
    except ImportError:
        raise UsageError("cosign-format keys need the cosign extra: pip install 'lamina[cosign]'") from None


def _pem(label: str, data: bytes) -> bytes:
    b64 = base64.b64encode(data).decode()
    return (f"-----BEGIN {label}-----\n" + "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
            + f"\n-----END {label}-----\n").encode()


def _unpem(data: bytes, labels: tuple[str, ...], path: Path) -> bytes:
    text = data.decode("ascii", "replace")
    for label in labels:
        begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
        if begin in text and end in text:
            body = text.split(begin, 1)[1].split(end, 1)[0]
            try:
                return base64.b64decode("".join(body.split()), validate=True)
            except ValueError:
                break
    raise KeyFileError(f"{path}: not a {' or '.join(labels)} PEM file")


def _kdf(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    if not (2 <= n <= 1 << 20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError("scrypt parameters out of range")  # a hostile file must not ask for gigabytes
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=256 * r * (n + p + 2), dklen=32)


def encrypt_private(der: bytes, password: bytes) -> bytes:
    import nacl.secret
    import nacl.utils

    salt = nacl.utils.random(32)
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    box = nacl.secret.SecretBox(_kdf(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P))
    sealed = box.encrypt(der, nonce).ciphertext
    doc = {"kdf": {"name": "scrypt", "params": {"N": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
                   "salt": base64.b64encode(salt).decode()},
           "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
           "ciphertext": base64.b64encode(sealed).decode()}
    return _pem(PEM_PRIVATE, json.dumps(doc).encode())


def decrypt_private(data: bytes, password: bytes, path: Path) -> bytes:
    """The PKCS#8 DER inside a sigstore/cosign encrypted key file."""
    import nacl.exceptions
    import nacl.secret

    try:
        doc = json.loads(_unpem(data, (PEM_PRIVATE, PEM_PRIVATE_OLD), path))
        kdf, cipher = doc["kdf"], doc["cipher"]
        if kdf["name"] != "scrypt" or cipher["name"] != "nacl/secretbox":
            raise ValueError(f"unsupported kdf {kdf['name']!r} or cipher {cipher['name']!r}")
        params = kdf["params"]
        key = _kdf(password, base64.b64decode(kdf["salt"]), int(params["N"]), int(params["r"]), int(params["p"]))
        nonce, sealed = base64.b64decode(cipher["nonce"]), base64.b64decode(doc["ciphertext"])
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a usable encrypted private key ({exc})") from None
    try:
        return bytes(nacl.secret.SecretBox(key).decrypt(sealed, nonce))
    except (nacl.exceptions.CryptoError, ValueError):
        raise KeyFileError(f"{path}: wrong password (or the key file is damaged)") from None


def keygen(prefix: Path, password: bytes) -> tuple[Path, Path]:
    _crypto()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private_path, public_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise OutputError(f"{path} already exists; lamina never overwrites a key")
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_new(private_path, encrypt_private(der, password), 0o600)
    _write_new(public_path, public, 0o644)
    return private_path, public_path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except OSError as exc:
        raise OutputError(f"cannot write {str(path)!r}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _read_small(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return read_limited(f, MAX_KEY_FILE)
    except OSError as exc:
        raise InputError(f"cannot read the {what} {str(path)!r}: {exc.strerror}") from None
    except TooLarge:
        raise KeyFileError(f"{path}: too large for a {what}") from None


def load_private(path: Path, password: bytes) -> Any:
    _crypto()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    der = decrypt_private(_read_small(path, "private key"), password, path)
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"{path}: not an ECDSA key")
    return key


def load_public(path: Path) -> Any:
    _crypto()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    data = _read_small(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise KeyFileError(f"{path}: not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyFileError(f"{path}: not an ECDSA public key")
    return key


def payload(target: Target) -> bytes:
    """cosign's payload: the repository (not the tag: cosign signs digests) and the digest."""
    doc = {"critical": {"identity": {"docker-reference": target.reference.name},
                        "image": {"docker-manifest-digest": str(target.digest)},
                        "type": SIGNATURE_TYPE},
           "optional": None}
    return json.dumps(doc, separators=(",", ":")).encode()


def signature_tag(digest: Digest) -> str:
    return f"{digest.algorithm}-{digest.hex}.sig"


def _get(options: Options, target: Target, path: str, what: str, accept: str | None, limit: int) -> bytes | None:
    """GET a manifest or blob of the target's repository; None on 404; capped; closed."""
    ref = target.reference
    registry = options.registry(ref.registry)
    try:
        response = registry.request("GET", f"/v2/{ref.repository}/{path}", what=what, ok=(200, 404), stream=True,
                                    scopes=(f"repository:{ref.repository}:pull",),
                                    headers={"Accept": accept} if accept else None)
        try:
            if response.status_code == 404:
                return None
            data = bytearray()
            for chunk in response.iter_bytes(1 << 16):
                data += chunk
                if len(data) > limit:
                    raise VerificationError(f"{ref.registry}: {what}: larger than {limit} bytes")
            return bytes(data)
        finally:
            response.close()
    finally:
        registry.close()


def _existing(options: Options, target: Target, tag: str, media_type: str = LAYER_MEDIA_TYPE) -> list[dict[str, Any]]:
    data = _get(options, target, f"manifests/{tag}", f"get {tag}", mediatypes.OCI_MANIFEST, MAX_MANIFEST)
    if data is None:
        return []
    try:
        layers = loads(data).get("layers") or []
    except (ValueError, AttributeError):
        raise VerificationError(f"{target.reference.name}:{tag} is not a JSON manifest") from None
    return [layer for layer in layers if isinstance(layer, dict) and layer.get("mediaType") == media_type]


def sign(target: Target, key: Any, options: Options) -> str:
    """Sign with a private key from ``load_private``; push the signature manifest; return where."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    body = payload(target)
    signature = base64.b64encode(key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
    layer = Descriptor(LAYER_MEDIA_TYPE, Digest.of_bytes(body), len(body), annotations={ANNOTATION: signature})
    return push_layer(target, signature_tag(target.digest), layer, body, options)


def push_layer(target: Target, tag: str, layer: Descriptor, body: bytes, options: Options) -> str:
    """Add one layer to the manifest cosign keeps under ``tag`` (``.sig``, ``.att``) in the
    image's repository, keeping the layers already there; returns the reference pushed."""
    from lamina.registry import api
    from lamina.registry.push import artifact_plan

    layers = [*_existing(options, target, tag, layer.media_type), layer.to_json()]
    blobs: dict[Digest, bytes] = {layer.digest: body}
    config = canonical.dumps({
        "architecture": "", "created": "0001-01-01T00:00:00Z", "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "", "rootfs": {"type": "layers", "diff_ids": [entry["digest"] for entry in layers]}, "config": {}})
    config_desc = Descriptor(mediatypes.OCI_CONFIG, Digest.of_bytes(config), len(config))
    blobs[config_desc.digest] = config
    manifest = canonical.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
                                "config": config_desc.to_json(), "layers": layers})
    desc = Descriptor(mediatypes.OCI_MANIFEST, Digest.of_bytes(manifest), len(manifest))
    blobs[desc.digest] = manifest
    existing_blobs = {Digest.parse(entry["digest"]) for entry in layers[:-1]} - {layer.digest}
    plan = artifact_plan(desc, manifest, blobs)
    plan = attrs.evolve(plan, blobs=tuple(d for d in plan.blobs if d.digest not in existing_blobs))  # already there
    where = f"{target.reference.name}:{tag}"
    api.push(plan, where, options)
    return where


def attached(options: Options, target: Target, layers: list[dict[str, Any]], noun: str,
             reasons: list[str]) -> Iterator[tuple[int, dict[str, Any], bytes]]:
    """(number, layer, bytes) of each layer of an attached manifest (signatures, attestations),
    fetched capped and checked against its digest; one that is not adds a reason and is skipped."""
    for n, layer in enumerate(layers, start=1):
        try:
            digest = Digest.parse(str(layer.get("digest")))
        except (LaminaError, ValueError):
            reasons.append(f"{noun} {n}: malformed")
            continue
        body = _get(options, target, f"blobs/{digest}", f"get {noun} {digest}", None, MAX_PAYLOAD)
        if body is None or Digest.of_bytes(body) != digest:
            reasons.append(f"{noun} {n}: missing or not matching its digest")
            continue
        yield n, layer, body


def verify(target: Target, pub_path: Path, options: Options) -> str:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = load_public(pub_path)
    what = f"{target.reference} ({target.digest})"
    layers = _existing(options, target, signature_tag(target.digest))
    if not layers:
        raise VerificationError(f"{what}: no cosign signature ({signature_tag(target.digest)} not found)")
    reasons: list[str] = []
    for n, layer, body in attached(options, target, layers, "signature", reasons):
        try:
            signature = base64.b64decode(str((layer.get("annotations") or {}).get(ANNOTATION, "")), validate=True)
        except ValueError:
            reasons.append(f"signature {n}: malformed")
            continue
        try:
            key.verify(signature, body, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            reasons.append(f"signature {n}: not signed by {pub_path}")
            continue
        try:
            critical = loads(body)["critical"]
            claimed = (critical["type"], critical["image"]["docker-manifest-digest"], critical["identity"]["docker-reference"])
        except (ValueError, KeyError, TypeError):
            reasons.append(f"signature {n}: bad payload")
            continue
        if claimed[:2] != (SIGNATURE_TYPE, str(target.digest)):
            reasons.append(f"signature {n}: signs {claimed[1]}, not this manifest")
        elif claimed[2] != target.reference.name:
            reasons.append(f"signature {n}: signs {claimed[2]}, not {target.reference.name}")
        else:
            return f"verified {what}: cosign signature {n} by {pub_path}"
    raise VerificationError(f"{what}: no valid cosign signature ({'; '.join(reasons)})")
