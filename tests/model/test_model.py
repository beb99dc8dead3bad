import json

import pytest
from support.oci import check_schema

from lamina.errors import UsageError
from lamina.model import ConfigFile, ContainerConfig, Descriptor, Digest, HistoryEntry, Manifest, Platform, Reference
from lamina.model.config import rfc3339
from lamina.model.manifest import Index


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello", "docker.io/library/hello:latest"),
        ("alpine:3.20", "docker.io/library/alpine:3.20"),
        ("user/app", "docker.io/user/app:latest"),
        ("localhost:5000/a/b:v1", "localhost:5000/a/b:v1"),
        ("localhost/app", "localhost/app:latest"),
        ("ghcr.io/org/app@sha256:" + "a" * 64, "ghcr.io/org/app@sha256:" + "a" * 64),
    ],
)
def test_reference_normalises_like_docker(text: str, expected: str) -> None:
    assert str(Reference.parse(text)) == expected


@pytest.mark.parametrize("text", ["", "Hello", "a b", "app:", "app:-x", "/app", "app@sha256:12"])
def test_bad_references_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="bad image reference"):
        Reference.parse(text)


def test_familiar_name() -> None:
    assert Reference.parse("hello:v1").familiar_name == "hello"
    assert Reference.parse("localhost:5000/x").familiar_name == "localhost:5000/x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("linux/amd64", "linux/amd64"), ("linux/arm64/v8", "linux/arm64"), ("linux/arm/v7", "linux/arm/v7"),
     ("linux/x86_64", "linux/amd64"), ("Linux/AARCH64", "linux/arm64")],
)
def test_platform_normalisation(text: str, expected: str) -> None:
    assert str(Platform.parse(text)) == expected


@pytest.mark.parametrize("text", ["linux", "linux/amd64/v1/x", "plan9/amd64", "linux/z80", "linux//v7"])
def test_bad_platforms(text: str) -> None:
    with pytest.raises(UsageError):
        Platform.parse(text)


def test_digest_parse_round_trip() -> None:
    d = Digest.of_bytes(b"x")
    assert Digest.parse(str(d)) == d
    with pytest.raises(UsageError):
        Digest.parse("md5:abc")


def test_config_manifest_and_index_match_the_oci_schemas() -> None:
    platform = Platform.parse("linux/arm/v7")
    config = ConfigFile(
        platform=platform,
        created=rfc3339(1_700_000_000),
        config=ContainerConfig(
            user="65532", exposed_ports=("8080/tcp",), env=("A=1",), entrypoint=("/app",), cmd=(),
            working_dir="/w", labels=(("k", "v"),), stop_signal="SIGINT",
        ),
        diff_ids=(Digest.of_bytes(b"layer"),),
        history=(HistoryEntry(rfc3339(0), "lamina: add x"),),
    )
    doc = json.loads(config.to_bytes())
    check_schema("config-schema.json", doc)
    assert doc["created"] == "2023-11-14T22:13:20Z"
    assert doc["variant"] == "v7"
    assert doc["config"]["Cmd"] == []  # an explicit empty cmd is kept, not dropped
    cdesc = Descriptor("application/vnd.oci.image.config.v1+json", Digest.of_bytes(config.to_bytes()), 10)
    ldesc = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", Digest.of_bytes(b"l"), 5, annotations={"a": "b"})
    manifest = Manifest(cdesc, (ldesc,), annotations={"org.opencontainers.image.source": "x"})
    check_schema("image-manifest-schema.json", json.loads(manifest.to_bytes()))
    mdesc = Descriptor("application/vnd.oci.image.manifest.v1+json", Digest.of_bytes(manifest.to_bytes()), 3, platform=platform)
    check_schema("image-index-schema.json", json.loads(Index((mdesc,)).to_bytes()))


def test_schema_check_can_fail() -> None:
    with pytest.raises(AssertionError):
        check_schema("image-manifest-schema.json", {"schemaVersion": 3, "config": {}, "layers": "x"})


def test_canonical_bytes_are_stable_and_compact() -> None:
    a = ContainerConfig(labels=(("b", "2"), ("a", "1")), exposed_ports=("9/udp", "1/tcp")).to_json()
    assert list(a["Labels"]) == ["a", "b"]
    assert list(a["ExposedPorts"]) == ["1/tcp", "9/udp"]
    d = Descriptor("t", Digest.of_bytes(b""), 0, annotations={"z": "1", "a": "2"})
    assert Descriptor.from_json(d.to_json()) == d
