"""lamina's OpenPGP signatures, checked by skopeo (containers/image, gpgme) under a signedBy
policy, and skopeo's own signatures checked by ``lamina verify``; all against a real
distribution registry on 127.0.0.1 and throwaway GnuPG homes."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import build_ok, lamina
from support.tools import require

pytestmark = pytest.mark.e2e

PASSPHRASE = "correct horse battery staple"


class GnupgHome:
    """A throwaway GNUPGHOME with one ed25519 signing key (optionally passphrase-protected)."""

    def __init__(self, path: Path, uid: str, passphrase: str = "") -> None:
        self.path = path
        path.mkdir(mode=0o700)
        self.run("--pinentry-mode", "loopback", "--passphrase", passphrase, "--quick-gen-key", uid, "ed25519", "sign", "never")
        colons = self.run("--list-secret-keys", "--with-colons")
        self.fingerprint = next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:"))
        self.pubkey = path.parent / f"{path.name}.pub.asc"
        self.pubkey.write_text(self.run("--armor", "--export", self.fingerprint))
        self.forget_passphrase()

    def run(self, *args: str) -> str:
        res = subprocess.run(["gpg", "--homedir", str(self.path), "--batch", *args], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout

    def forget_passphrase(self) -> None:
        """Stop the agent, so a protected key needs its passphrase again."""
        subprocess.run(["gpgconf", "--homedir", str(self.path), "--kill", "all"], capture_output=True, check=False)

    @property
    def env(self) -> dict[str, str]:
        return {"GNUPGHOME": str(self.path)}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, GnupgHome]]:
    require("gpg")
    require("gpgconf")
    root = tmp_path_factory.mktemp("gpg")
    homes = {"signer": GnupgHome(root / "signer", "Lamina Signer <signer@lamina.invalid>"),
             "other": GnupgHome(root / "other", "Someone Else <other@lamina.invalid>"),
             "locked": GnupgHome(root / "locked", "Locked <locked@lamina.invalid>", PASSPHRASE)}
    yield homes
    for home in homes.values():
        home.forget_passphrase()


@pytest.fixture(scope="module")
def images(testdata_out: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("img")
    first, second = out / "one.tar", out / "two.tar"
    build_ok("--add", f"{testdata_out / 'hello-amd64'}:/hello", "--cmd", '["/hello"]', "--no-lint", "-o", str(first))
    build_ok("--add", f"{testdata_out / 'hello-amd64'}:/hello", "--cmd", '["/hello", "two"]', "--no-lint", "-o", str(second))
    return first, second


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"DOCKER_CONFIG": str(tmp_path / "docker"), "XDG_CACHE_HOME": str(tmp_path / "cache")}


def push(image: Path, ref: str, env: dict[str, str]) -> str:
    res = lamina("push", str(image), ref, env=env)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().split("@")[1]


def skopeo_pull(ref: str, pubkey: Path, lookaside: Path, work: Path) -> subprocess.CompletedProcess[str]:
    """skopeo copy as CI uses it: only images signed by ``pubkey`` may be read from the registry."""
    host, repository = ref.split("/", 1)
    registries_d = work / "registries.d"
    registries_d.mkdir(exist_ok=True)
    (registries_d / "lamina.yaml").write_text(f"docker:\n  {host}:\n    lookaside: file://{lookaside}\n")
    policy = work / "policy.json"
    policy.write_text(json.dumps({
        "default": [{"type": "reject"}],
        "transports": {"docker": {ref.rsplit(":", 1)[0]: [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(pubkey)}]}},
    }))
    out = work / "pulled"
    return subprocess.run([require("skopeo"), "copy", "--registries.d", str(registries_d), "--policy", str(policy),
                           "--remove-signatures", "--src-tls-verify=false", f"docker://{ref}", f"oci:{out}:x"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


def test_skopeo_accepts_lamina_signature_only_for_that_key_and_image(registry, keys, images, env, tmp_path: Path) -> None:
    signer, other = keys["signer"], keys["other"]
    ref = f"{registry.host}/lamina/signed:v1"
    digest = push(images[0], ref, env)
    lookaside = tmp_path / "lookaside"
    res = lamina("sign", ref, "--gpg-key", signer.fingerprint, "--lookaside", str(lookaside), env={**env, **signer.env})
    assert res.returncode == 0, res.stderr
    written = lookaside / f"lamina/signed@sha256={digest.split(':')[1]}" / "signature-1"
    assert res.stdout.strip() == f"wrote {written}" and written.is_file()

    accepted = skopeo_pull(ref, signer.pubkey, lookaside, tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    refused = skopeo_pull(ref, other.pubkey, lookaside, tmp_path)
    assert refused.returncode != 0 and "rejected" in refused.stderr

    ok = lamina("verify", ref, "--gpg-pubkey", str(signer.pubkey), "--lookaside", str(lookaside), env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"verified {ref} ({digest}): signature-1 signed by {signer.fingerprint}"
    wrong = lamina("verify", ref, "--gpg-pubkey", str(other.pubkey), "--lookaside", str(lookaside), env=env)
    assert wrong.returncode == 1 and wrong.stdout == ""
    assert wrong.stderr.count("\n") == 1 and "not validly signed" in wrong.stderr

    push(images[1], ref, env)  # the tag now names another image: the old signature must not cover it
    moved = skopeo_pull(ref, signer.pubkey, lookaside, tmp_path)
    assert moved.returncode != 0 and "rejected" in moved.stderr
    stale = lamina("verify", ref, "--gpg-pubkey", str(signer.pubkey), "--lookaside", str(lookaside), env=env)
    assert stale.returncode == 1 and stale.stderr.startswith("lamina: error: ") and "no signature in" in stale.stderr


def test_lamina_verifies_skopeo_signature_and_refuses_tampering(registry, keys, images, env, tmp_path: Path) -> None:
    signer = keys["signer"]
    source, ref = f"{registry.host}/lamina/unsigned:v1", f"{registry.host}/lamina/by-skopeo:v1"
    push(images[0], source, env)
    lookaside = tmp_path / "lookaside"
    registries_d = tmp_path / "registries.d"
    registries_d.mkdir()
    (registries_d / "l.yaml").write_text(f"docker:\n  {registry.host}:\n    lookaside-staging: file://{lookaside}\n")
    policy = tmp_path / "accept.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    copied = subprocess.run(
        [require("skopeo"), "copy", "--registries.d", str(registries_d), "--policy", str(policy), "--sign-by",
         signer.fingerprint, "--src-tls-verify=false", "--dest-tls-verify=false", f"docker://{source}", f"docker://{ref}"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300, env={**os.environ, **signer.env})
    assert copied.returncode == 0, copied.stderr
    [signature] = lookaside.glob("lamina/by-skopeo@sha256=*/signature-1")

    ok = lamina("verify", ref, "--gpg-pubkey", str(signer.pubkey), "--lookaside", f"file://{lookaside}", env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"verified {ref} (sha256:") and signer.fingerprint in ok.stdout
    # The same signature does not vouch for another tag of the repository (the identity is checked).
    other_tag = f"{registry.host}/lamina/by-skopeo:v2"
    push(images[0], other_tag, env)
    renamed = lamina("verify", other_tag, "--gpg-pubkey", str(signer.pubkey), "--lookaside", str(lookaside), env=env)
    assert renamed.returncode == 1 and "not " + other_tag in renamed.stderr

    data = bytearray(signature.read_bytes())
    data[len(data) // 2] ^= 0x01
    signature.write_bytes(bytes(data))
    tampered = lamina("verify", ref, "--gpg-pubkey", str(signer.pubkey), "--lookaside", str(lookaside), env=env)
    assert tampered.returncode == 1, tampered.stderr
    assert tampered.stderr.count("\n") == 1 and "no valid signature" in tampered.stderr


def test_build_push_and_sign_in_one_step(registry, keys, testdata_out: Path, env, tmp_path: Path) -> None:
    signer = keys["signer"]
    ref = f"{registry.host}/lamina/built:v1"
    lookaside = tmp_path / "lookaside"
    res = lamina("build", "--add", f"{testdata_out / 'hello-amd64'}:/hello", "--no-lint", "--push", ref,
                 "--sign-gpg-key", signer.fingerprint, "--lookaside", str(lookaside), env={**env, **signer.env})
    assert res.returncode == 0, res.stderr
    assert skopeo_pull(ref, signer.pubkey, lookaside, tmp_path).returncode == 0
    without_push = lamina("build", "--add", f"{testdata_out / 'hello-amd64'}:/hello", "--sign-gpg-key", signer.fingerprint,
                          "--lookaside", str(lookaside), "-o", str(tmp_path / "x.tar"), env=env)
    assert without_push.returncode == 2 and "--push" in without_push.stderr
    assert not (tmp_path / "x.tar").exists()


def test_passphrase_and_missing_key_errors_are_one_line_without_secrets(registry, keys, images, env, tmp_path: Path) -> None:
    locked = keys["locked"]
    ref = f"{registry.host}/lamina/locked:v1"
    push(images[0], ref, env)
    lookaside = tmp_path / "lookaside"
    args = ("--debug", "sign", ref, "--gpg-key", locked.fingerprint, "--lookaside", str(lookaside))

    locked.forget_passphrase()
    missing = lamina(*args, env={**env, **locked.env})
    assert missing.returncode == 1
    assert missing.stderr.splitlines()[-1] == (f"lamina: error: cannot sign with {locked.fingerprint}: "
                                              "the key needs a passphrase (set LAMINA_GPG_PASSPHRASE)")
    wrong_secret = "not-the-passphrase-xyzzy"
    wrong = lamina(*args, env={**env, **locked.env, "LAMINA_GPG_PASSPHRASE": wrong_secret})
    assert wrong.returncode == 1
    assert wrong.stderr.splitlines()[-1].endswith("wrong passphrase in LAMINA_GPG_PASSPHRASE")
    assert wrong_secret not in wrong.stderr + wrong.stdout
    assert not list(lookaside.rglob("signature-*"))

    right = lamina(*args, env={**env, **locked.env, "LAMINA_GPG_PASSPHRASE": PASSPHRASE})
    assert right.returncode == 0, right.stderr
    assert PASSPHRASE not in right.stderr + right.stdout
    assert skopeo_pull(ref, locked.pubkey, lookaside, tmp_path).returncode == 0

    unknown = lamina("sign", ref, "--gpg-key", keys["other"].fingerprint, "--lookaside", str(lookaside),
                     env={**env, **locked.env})
    assert unknown.returncode == 1
    assert unknown.stderr == f"lamina: error: no secret key {keys['other'].fingerprint} in GNUPGHOME={locked.path}\n"
    no_pubkey = lamina("verify", ref, "--gpg-pubkey", str(tmp_path / "absent.asc"), "--lookaside", str(lookaside), env=env)
    assert no_pubkey.returncode != 0 and no_pubkey.stderr.count("\n") == 1
    not_a_key = tmp_path / "not-a-key.asc"
    not_a_key.write_text("hello\n")
    bogus = lamina("verify", ref, "--gpg-pubkey", str(not_a_key), "--lookaside", str(lookaside), env=env)
    assert bogus.returncode == 1 and bogus.stderr == f"lamina: error: {not_a_key}: no OpenPGP public key in it\n"


def registry_get(host: str, path: str, accept: str = "") -> bytes:
    """Read the registry directly (no lamina code), as a verifier would."""
    import urllib.request

    request = urllib.request.Request(f"http://{host}{path}", headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def test_cosign_signature_verified_with_cryptography_alone(registry, images, env, tmp_path: Path) -> None:
    pytest.importorskip("nacl")
    import base64
    import hashlib

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ref = f"{registry.host}/lamina/cosigned:v1"
    digest = push(images[0], ref, env)
    keys = {**env, "LAMINA_KEY_PASSWORD": "s3cret-pw"}
    made = lamina("keygen", "--out", str(tmp_path / "cosign"), env=keys)
    assert made.returncode == 0, made.stderr
    assert "s3cret-pw" not in made.stdout + made.stderr
    signed = lamina("--debug", "sign", ref, "--key", str(tmp_path / "cosign.key"), env=keys)
    assert signed.returncode == 0, signed.stderr
    tag = f"sha256-{digest[7:]}.sig"
    assert signed.stdout.strip() == f"pushed {registry.host}/lamina/cosigned:{tag}"
    assert "s3cret-pw" not in signed.stdout + signed.stderr

    manifest = json.loads(registry_get(registry.host, f"/v2/lamina/cosigned/manifests/{tag}",
                                       "application/vnd.oci.image.manifest.v1+json"))
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    payload = registry_get(registry.host, f"/v2/lamina/cosigned/blobs/{layer['digest']}")
    assert hashlib.sha256(payload).hexdigest() == layer["digest"][7:]
    public = serialization.load_pem_public_key((tmp_path / "cosign.pub").read_bytes())
    signature = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
    public.verify(signature, payload, ec.ECDSA(hashes.SHA256()))  # type: ignore[union-attr]
    critical = json.loads(payload)["critical"]
    assert critical == {"identity": {"docker-reference": f"{registry.host}/lamina/cosigned"},
                        "image": {"docker-manifest-digest": digest}, "type": "cosign container image signature"}

    ok = lamina("verify", ref, "--key", str(tmp_path / "cosign.pub"), env=env)
    assert ok.returncode == 0 and ok.stdout.startswith(f"verified {ref} ({digest}): cosign signature 1"), ok.stderr
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "other.pub").write_bytes(other.public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
    wrong = lamina("verify", ref, "--key", str(tmp_path / "other.pub"), env=env)
    assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1 and "not signed by" in wrong.stderr

    push(images[1], ref, env)  # the tag moved: the signature is for the old digest
    moved = lamina("verify", ref, "--key", str(tmp_path / "cosign.pub"), env=env)
    assert moved.returncode == 1 and "no cosign signature" in moved.stderr

    bad = lamina("--debug", "sign", ref, "--key", str(tmp_path / "cosign.key"), env={**env, "LAMINA_KEY_PASSWORD": "nope"})
    assert bad.returncode == 1
    assert bad.stderr.splitlines()[-1] == f"lamina: error: {tmp_path / 'cosign.key'}: wrong password (or the key file is damaged)"
    key_body = (tmp_path / "cosign.key").read_text().splitlines()[1]
    assert key_body not in bad.stderr and "nope" not in bad.stderr
    no_password = lamina("sign", ref, "--key", str(tmp_path / "cosign.key"), env=env)
    assert no_password.returncode == 2 and "LAMINA_KEY_PASSWORD" in no_password.stderr


def test_signed_provenance_pushed_as_cosign_attestation(registry, testdata_out: Path, env, tmp_path: Path) -> None:
    pytest.importorskip("nacl")
    keys = {**env, "LAMINA_KEY_PASSWORD": "pw"}
    assert lamina("keygen", "--out", str(tmp_path / "k"), env=keys).returncode == 0
    ref = f"{registry.host}/lamina/attested:v1"
    res = lamina("build", "--add", f"{testdata_out / 'hello-amd64'}:/hello", "--no-lint", "--push", ref,
                 "-o", str(tmp_path / "img.tar"), "--provenance-key", str(tmp_path / "k.key"), env=keys)
    assert res.returncode == 0, res.stderr
    digest = res.stdout.strip().split("@")[1]
    manifest = json.loads(registry_get(registry.host, f"/v2/lamina/attested/manifests/sha256-{digest[7:]}.att",
                                       "application/vnd.oci.image.manifest.v1+json"))
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    assert layer["annotations"]["predicateType"] == "https://slsa.dev/provenance/v1"
    pushed = registry_get(registry.host, f"/v2/lamina/attested/blobs/{layer['digest']}")
    assert pushed == (tmp_path / "img.tar.provenance.dsse.json").read_bytes()


def test_attached_artifacts_indexed_by_the_referrers_tag_schema_on_distribution_2_8(
        registry, testdata_out: Path, env, tmp_path: Path) -> None:
    import urllib.error

    ref = f"{registry.host}/lamina/referred:v1"
    args = ("build", "--add", f"{testdata_out / 'hello-amd64'}:/hello", "--no-lint", "--sbom", "spdx", "--sbom-attach",
            "--provenance", "--oci-dir", str(tmp_path / "layout"), "--push", ref)
    res = lamina(*args, env=env)
    assert res.returncode == 0, res.stderr
    digest = res.stdout.strip().split("@")[1]
    with pytest.raises(urllib.error.HTTPError) as no_api:  # this registry has no referrers API...
        registry_get(registry.host, f"/v2/lamina/referred/referrers/{digest}")
    assert no_api.value.code == 404
    index_type = "application/vnd.oci.image.index.v1+json"
    index = json.loads(registry_get(registry.host, f"/v2/lamina/referred/manifests/sha256-{digest[7:]}", index_type))
    assert index["mediaType"] == index_type  # ...so the fallback tag lists every artifact of the image
    layout = json.loads((tmp_path / "layout/index.json").read_text())["manifests"][1:]
    assert sorted((m["digest"], m["artifactType"]) for m in index["manifests"]) == \
        sorted((m["digest"], m["annotations"]["org.opencontainers.image.artifactType"]) for m in layout)
    assert {m["artifactType"] for m in index["manifests"]} == {"application/spdx+json", "application/vnd.in-toto+json"}
    for entry in index["manifests"]:
        manifest = json.loads(registry_get(registry.host, f"/v2/lamina/referred/manifests/{entry['digest']}", entry["mediaType"]))
        assert manifest["subject"]["digest"] == digest
    again = lamina(*args, env=env)  # the same artifacts again: listed once, not twice
    assert again.returncode == 0, again.stderr
    index = json.loads(registry_get(registry.host, f"/v2/lamina/referred/manifests/sha256-{digest[7:]}", index_type))
    assert len(index["manifests"]) == 2


def test_verify_with_provenance(registry, testdata_out: Path, env, tmp_path: Path) -> None:
    pytest.importorskip("nacl")
    keys = {**env, "LAMINA_KEY_PASSWORD": "pw"}
    for name in ("k", "other"):
        assert lamina("keygen", "--out", str(tmp_path / name), env=keys).returncode == 0
    ref = f"{registry.host}/lamina/verified-provenance:v1"
    res = lamina("build", "--add", f"{testdata_out / 'hello-amd64'}:/hello", "--no-lint", "--push", ref,
                 "--provenance-key", str(tmp_path / "k.key"), env=keys)
    assert res.returncode == 0, res.stderr
    digest = res.stdout.strip().split("@")[1]
    unsigned = lamina("verify", ref, "--key", str(tmp_path / "k.pub"), "--provenance", env=env)
    assert unsigned.returncode == 1 and "no cosign signature" in unsigned.stderr  # attested, but not signed yet
    assert lamina("sign", ref, "--key", str(tmp_path / "k.key"), env=keys).returncode == 0
    ok = lamina("verify", ref, "--key", str(tmp_path / "k.pub"), "--provenance", env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == (f"verified {ref} ({digest}): cosign signature 1 by {tmp_path / 'k.pub'}; "
                         f"SLSA provenance (attestation 1) signed by {tmp_path / 'k.pub'}\n")
    assert lamina("sign", ref, "--key", str(tmp_path / "other.key"), env=keys).returncode == 0
    mixed = lamina("verify", ref, "--key", str(tmp_path / "other.pub"), "--provenance", env=env)
    assert mixed.returncode == 1 and mixed.stderr.count("\n") == 1
    assert "no valid provenance (attestation 1: not signed by" in mixed.stderr
