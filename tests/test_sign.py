"""Simple signing without a registry: the payload's strict reading, the lookaside layout, and
gpg round trips (sign, verify, tamper) in throwaway GnuPG homes."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.errors import InputError, OutputError, UsageError
from lamina.model import Digest, Reference
from lamina.sign import gpg, simple
from lamina.sign.target import Target, parse_reference
from support.tools import require

DIGEST = Digest("ab" * 32)
TARGET = Target(Reference.parse("registry.example:5000/team/app:v1"), DIGEST)


def test_payload_is_the_atomic_container_signature_format() -> None:
    doc = json.loads(simple.payload(TARGET, timestamp=1700000000))
    assert doc["critical"] == {"identity": {"docker-reference": "registry.example:5000/team/app:v1"},
                               "image": {"docker-manifest-digest": f"sha256:{'ab' * 32}"},
                               "type": "atomic container signature"}
    assert doc["optional"]["timestamp"] == 1700000000 and doc["optional"]["creator"].startswith("lamina ")
    claim = simple.parse_payload(simple.payload(TARGET))
    assert claim == simple.Claim(TARGET.reference, DIGEST)


def test_docker_hub_names_are_normalised_in_the_identity() -> None:
    assert Target(parse_reference("docker://alpine"), DIGEST).identity == "docker.io/library/alpine:latest"
    assert Target(parse_reference(f"alpine@{DIGEST}"), DIGEST).identity == "docker.io/library/alpine"
    with pytest.raises(UsageError):
        parse_reference("oci:layout:tag")


@pytest.mark.parametrize("mutate", [
    lambda d: d["critical"].update(extra=1),  # an unknown critical key is never ignored
    lambda d: d["critical"]["image"].update(more="x"),
    lambda d: d["critical"]["identity"].update(more="x"),
    lambda d: d["critical"].update(type="something else"),
    lambda d: d["critical"].pop("identity"),
    lambda d: d.update(unexpected={}),
    lambda d: d["critical"]["image"].update({"docker-manifest-digest": 5}),
])
def test_payload_reading_is_strict(mutate) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(simple.payload(TARGET))
    mutate(doc)
    with pytest.raises(ValueError):
        simple.parse_payload(json.dumps(doc).encode())


def test_identity_rules_match_containers_image_default() -> None:
    tagged = Reference.parse("h:1/r:v1")
    assert simple.identity_matches(Reference.parse("h:1/r:v1"), tagged)
    assert not simple.identity_matches(Reference.parse("h:1/r:v2"), tagged)
    assert not simple.identity_matches(Reference.parse("h:1/other:v1"), tagged)
    by_digest = Reference.parse(f"h:1/r@{DIGEST}")
    assert simple.identity_matches(Reference.parse("h:1/r:anything"), by_digest)
    assert not simple.identity_matches(Reference.parse("h:2/r:v1"), by_digest)


def test_lookaside_layout_and_numbering(tmp_path: Path) -> None:
    first = simple.write(tmp_path, TARGET, b"one")
    second = simple.write(tmp_path, TARGET, b"two")
    where = tmp_path / "team" / f"app@sha256={'ab' * 32}"
    assert (first, second) == (where / "signature-1", where / "signature-2")
    assert sorted(p.name for p in where.iterdir()) == ["signature-1", "signature-2"]  # no temporary left
    assert [data for _, data in simple.signatures(tmp_path, TARGET)] == [b"one", b"two"]
    second.unlink()
    (where / "signature-3").write_bytes(b"after a gap")  # containers/image stops at the first gap
    assert [data for _, data in simple.signatures(tmp_path, TARGET)] == [b"one"]
    assert simple.lookaside_dir(f"file://{tmp_path}") == tmp_path
    with pytest.raises(UsageError):
        simple.lookaside_dir("https://sigs.example/")


def test_concurrent_writers_never_share_a_number(tmp_path: Path) -> None:
    paths: list[Path] = []
    threads = [threading.Thread(target=lambda i=i: paths.append(simple.write(tmp_path, TARGET, b"%d" % i)))
               for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.name for p in paths) == sorted(f"signature-{n}" for n in range(1, 17))


def test_fingerprint_flag() -> None:
    assert gpg.parse_fingerprint("0x" + "a" * 40) == "A" * 40
    for bad in ("", "abc", "z" * 40, "a" * 41):
        with pytest.raises(UsageError):
            gpg.parse_fingerprint(bad)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, Path]]:
    """A throwaway GNUPGHOME with an unprotected ed25519 key: (home, fingerprint, public key file)."""
    require("gpg")
    path = tmp_path_factory.mktemp("gnupg")
    path.chmod(0o700)

    def run(*args: str) -> str:
        return subprocess.run(["gpg", "--homedir", str(path), "--batch", *args], check=True, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL).stdout

    run("--passphrase", "", "--quick-gen-key", "Unit <unit@lamina.invalid>", "ed25519", "sign", "never")
    fpr = next(line.split(":")[9] for line in run("--list-keys", "--with-colons").splitlines() if line.startswith("fpr:"))
    pub = path.parent / "unit.pub.asc"
    pub.write_text(run("--armor", "--export", fpr))
    yield path, fpr, pub
    subprocess.run(["gpgconf", "--homedir", str(path), "--kill", "all"], capture_output=True, check=False)


def test_gpg_round_trip_and_tampering(home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    path, fpr, pub = home
    monkeypatch.setenv("GNUPGHOME", str(path))
    monkeypatch.delenv("LAMINA_GPG_PASSPHRASE", raising=False)
    written = simple.sign(TARGET, fpr[-16:], tmp_path)  # a long key id names the key too
    assert simple.verify(TARGET, pub, tmp_path) == f"verified {TARGET.reference} ({DIGEST}): signature-1 signed by {fpr}"

    moved = Target(TARGET.reference, Digest("cd" * 32))
    (tmp_path / f"team/app@sha256={'cd' * 32}").mkdir()
    (tmp_path / f"team/app@sha256={'cd' * 32}/signature-1").write_bytes(written.read_bytes())  # copied beside another digest
    with pytest.raises(simple.VerificationError, match="signs sha256:abab.*not this manifest"):
        simple.verify(moved, pub, tmp_path)
    retagged = Target(Reference.parse("registry.example:5000/team/app:v2"), DIGEST)
    with pytest.raises(simple.VerificationError, match="not registry.example:5000/team/app:v2"):
        simple.verify(retagged, pub, tmp_path)

    data = bytearray(written.read_bytes())
    data[-10] ^= 0xFF
    written.write_bytes(bytes(data))
    with pytest.raises(simple.VerificationError, match="signature-1: not validly signed"):
        simple.verify(TARGET, pub, tmp_path)


def test_unsigned_payload_and_bad_key_files(home, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, pub = home
    simple.write(tmp_path, TARGET, simple.payload(TARGET))  # the JSON alone, not signed
    with pytest.raises(simple.VerificationError, match="no valid signature"):
        simple.verify(TARGET, pub, tmp_path)
    with pytest.raises(simple.VerificationError, match="no signature in"):
        simple.verify(TARGET, pub, tmp_path / "empty")
    with pytest.raises(InputError, match="cannot read the public key"):
        simple.verify(TARGET, tmp_path / "absent.asc", tmp_path)


def test_missing_secret_key(home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    path, _, _ = home
    monkeypatch.setenv("GNUPGHOME", str(path))
    with pytest.raises(gpg.SigningError, match=f"no secret key {'1' * 40} in GNUPGHOME="):
        simple.sign(TARGET, "1" * 40, tmp_path)
    assert not tmp_path.joinpath("team").exists()


# ---- cosign-format keys


def decrypt_by_hand(pem: bytes, password: bytes) -> bytes:
    """The sigstore encrypted key format, read without lamina: PEM → JSON → scrypt → secretbox."""
    import base64
    import hashlib

    import nacl.secret

    lines = pem.decode().strip().splitlines()
    assert lines[0] == "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----" and lines[-1].startswith("-----END ")
    doc = json.loads(base64.b64decode("".join(lines[1:-1])))
    assert doc["kdf"]["name"] == "scrypt" and doc["cipher"]["name"] == "nacl/secretbox"
    params = doc["kdf"]["params"]
    assert (params["N"], params["r"], params["p"]) == (32768, 8, 1)  # cosign's own parameters
    key = hashlib.scrypt(password, salt=base64.b64decode(doc["kdf"]["salt"]), n=params["N"], r=params["r"],
                         p=params["p"], maxmem=64 << 20, dklen=32)
    return nacl.secret.SecretBox(key).decrypt(base64.b64decode(doc["ciphertext"]), base64.b64decode(doc["cipher"]["nonce"]))


def test_keygen_round_trip_checked_independently(tmp_path: Path) -> None:
    pytest.importorskip("nacl")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from lamina.sign import cosign

    private, public = cosign.keygen(tmp_path / "k", b"pw")
    assert (private.stat().st_mode & 0o777, public.stat().st_mode & 0o777) == (0o600, 0o644)
    der = decrypt_by_hand(private.read_bytes(), b"pw")
    key = serialization.load_der_private_key(der, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    pub = serialization.load_pem_public_key(public.read_bytes())
    assert pub.public_numbers() == key.public_key().public_numbers()
    loaded = cosign.load_private(private, b"pw")
    signature = loaded.sign(b"payload", ec.ECDSA(hashes.SHA256()))
    pub.verify(signature, b"payload", ec.ECDSA(hashes.SHA256()))  # type: ignore[union-attr]
    with pytest.raises(OutputError, match="never overwrites"):
        cosign.keygen(tmp_path / "k", b"pw")


def test_key_errors_are_one_line_and_never_show_the_key(tmp_path: Path) -> None:
    pytest.importorskip("nacl")
    from lamina.sign import cosign

    private, public = cosign.keygen(tmp_path / "k", b"right")
    with pytest.raises(cosign.KeyFileError) as wrong:
        cosign.load_private(private, b"wrong")
    assert str(wrong.value) == f"{private}: wrong password (or the key file is damaged)"
    body = private.read_text().splitlines()
    assert not any(line in str(wrong.value) for line in body[1:-1])
    with pytest.raises(cosign.KeyFileError, match="not a ENCRYPTED SIGSTORE PRIVATE KEY"):
        cosign.load_private(public, b"right")
    with pytest.raises(InputError, match="cannot read the private key"):
        cosign.load_private(tmp_path / "absent.key", b"right")
    with pytest.raises(cosign.KeyFileError, match="not a PEM public key"):
        cosign.load_public(tmp_path / "k.key")


def test_hostile_scrypt_parameters_are_refused_not_computed(tmp_path: Path) -> None:
    pytest.importorskip("nacl")
    from lamina.sign import cosign

    doc = {"kdf": {"name": "scrypt", "params": {"N": 1 << 30, "r": 8, "p": 1}, "salt": "AAAA"},
           "cipher": {"name": "nacl/secretbox", "nonce": "AAAA"}, "ciphertext": "AAAA"}
    path = tmp_path / "hostile.key"
    path.write_bytes(cosign._pem(cosign.PEM_PRIVATE, json.dumps(doc).encode()))
    with pytest.raises(cosign.KeyFileError, match="out of range"):
        cosign.load_private(path, b"")


def test_cosign_payload() -> None:
    from lamina.sign import cosign

    doc = json.loads(cosign.payload(TARGET))
    assert doc == {"critical": {"identity": {"docker-reference": "registry.example:5000/team/app"},
                                "image": {"docker-manifest-digest": str(DIGEST)},
                                "type": "cosign container image signature"}, "optional": None}
    assert cosign.signature_tag(DIGEST) == f"sha256-{'ab' * 32}.sig"


def test_a_private_key_file_is_refused_as_a_public_key(home, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, fpr, _ = home
    secret = tmp_path / "secret.asc"
    secret.write_bytes(subprocess.run(["gpg", "--homedir", str(path), "--batch", "--pinentry-mode", "loopback",
                                       "--passphrase", "", "--armor", "--export-secret-keys", fpr],
                                      check=True, capture_output=True).stdout)
    with pytest.raises(InputError) as refused:
        simple.verify(TARGET, secret, tmp_path)
    assert str(refused.value) == f"{secret}: holds a private key; give the public key only (gpg --export)"
