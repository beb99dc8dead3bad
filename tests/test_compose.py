"""Image composition in process (lamina.image): inheritance from a base, overrides, and
digests that depend on the content alone. No daemon, no subprocess, no I/O."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from support.oci import check_schema

from lamina.image import DEFAULT_PATH, Base, ConfigChanges, Image, compose, compose_index, json_blobs, top_descriptor
from lamina.model import ConfigFile, Descriptor, Digest, Layer, Platform

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")
GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def layer(name: str) -> Layer:
    blob, raw = f"gz {name}".encode(), f"tar {name}".encode()
    return Layer(Descriptor(GZIP_LAYER, Digest.of_bytes(blob), len(blob)), Digest.of_bytes(raw), len(raw), 1,
                 f"lamina: add {name}")


BASE_CONFIG: dict[str, Any] = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "User": "1000:1000",
        "Env": ["PATH=/opt/bin:/usr/bin", "LANG=C.UTF-8", "MODE=base"],
        "Entrypoint": ["/docker-entrypoint.sh"],
        "Cmd": ["serve", "--port", "80"],
        "WorkingDir": "/srv",
        "Labels": {"maintainer": "base", "org.opencontainers.image.version": "1"},
        "ExposedPorts": {"80/tcp": {}},
        "Volumes": {"/data": {}},
        "StopSignal": "SIGQUIT",
        "Healthcheck": {"Test": ["CMD", "true"], "Interval": 30000000000},
    },
    "rootfs": {"type": "layers", "diff_ids": [str(layer("base").diff_id)]},
    "history": [{"created": "2020-01-01T00:00:00Z", "created_by": "/bin/sh -c #(nop) ADD rootfs"}],
}


def base() -> Base:
    return Base(config=ConfigFile.from_json(json.loads(json.dumps(BASE_CONFIG))), layers=(layer("base"),))


def config_of(image: Image) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(image.config_bytes)
    return doc


def test_scratch_image_has_only_its_layers_and_the_default_path() -> None:
    image = compose([layer("a"), layer("b")], ConfigChanges(cmd=("/a",)), platform=AMD64, epoch=0)
    doc = config_of(image)
    check_schema("config-schema.json", doc)
    assert doc["config"] == {"Env": [DEFAULT_PATH], "Cmd": ["/a"]}
    assert doc["rootfs"]["diff_ids"] == [str(layer("a").diff_id), str(layer("b").diff_id)]
    assert [h["created_by"] for h in doc["history"]] == ["lamina: add a", "lamina: add b"]
    assert (doc["created"], doc["os"], doc["architecture"]) == ("1970-01-01T00:00:00Z", "linux", "amd64")
    manifest = json.loads(image.manifest_bytes)
    check_schema("image-manifest-schema.json", manifest)
    assert [d["digest"] for d in manifest["layers"]] == [str(layer("a").descriptor.digest),
                                                          str(layer("b").descriptor.digest)]
    assert "annotations" not in manifest


def test_every_descriptor_names_the_bytes_it_points_at() -> None:
    image = compose([layer("a")], ConfigChanges(), platform=ARM64, epoch=7, base=base())
    for desc, data in ((image.config_descriptor, image.config_bytes), (image.manifest_descriptor, image.manifest_bytes)):
        assert str(desc.digest) == "sha256:" + hashlib.sha256(data).hexdigest()
        assert desc.size == len(data)
    assert json.loads(image.manifest_bytes)["config"] == image.config_descriptor.to_json()
    assert image.manifest_descriptor.platform == ARM64
    assert image.digest == image.manifest_descriptor.digest


def test_a_base_is_inherited_whole_when_nothing_changes() -> None:
    image = compose([layer("app")], ConfigChanges(), platform=AMD64, epoch=1700000000, base=base())
    doc = config_of(image)
    check_schema("config-schema.json", doc)
    assert doc["config"] == BASE_CONFIG["config"]  # Healthcheck (not modelled) passes through too
    assert doc["rootfs"]["diff_ids"] == [str(layer("base").diff_id), str(layer("app").diff_id)]
    assert doc["history"] == [*BASE_CONFIG["history"], {"created": "2023-11-14T22:13:20Z", "created_by": "lamina: add app"}]
    assert image.layers == (layer("base"), layer("app"))
    assert [d["digest"] for d in json.loads(image.manifest_bytes)["layers"]] == [
        str(layer("base").descriptor.digest), str(layer("app").descriptor.digest)]


def test_changes_override_scalars_and_merge_env_labels_and_ports_by_key() -> None:
    changes = ConfigChanges(
        user="65532", workdir="/app", stop_signal="SIGTERM", cmd=("--port", "8080"),
        env=(("MODE", "prod"), ("NEW", "1")),
        labels=(("org.opencontainers.image.version", "2"), ("extra", "yes")),
        expose=("8080/tcp", "80/tcp"),
    )
    config = config_of(compose([layer("app")], changes, platform=AMD64, epoch=0, base=base()))["config"]
    assert (config["User"], config["WorkingDir"], config["StopSignal"]) == ("65532", "/app", "SIGTERM")
    assert config["Entrypoint"] == ["/docker-entrypoint.sh"]  # cmd alone keeps the base's entrypoint
    assert config["Cmd"] == ["--port", "8080"]
    # A key set again keeps its place; new keys come last (Docker's ENV).
    assert config["Env"] == ["PATH=/opt/bin:/usr/bin", "LANG=C.UTF-8", "MODE=prod", "NEW=1"]
    assert config["Labels"] == {"maintainer": "base", "org.opencontainers.image.version": "2", "extra": "yes"}
    assert config["ExposedPorts"] == {"80/tcp": {}, "8080/tcp": {}}
    assert config["Volumes"] == {"/data": {}}


def test_an_entrypoint_without_a_cmd_clears_the_base_cmd() -> None:
    config = config_of(compose([], ConfigChanges(entrypoint=("/app",)), platform=AMD64, epoch=0, base=base()))["config"]
    assert config["Entrypoint"] == ["/app"]
    assert "Cmd" not in config


def test_an_entrypoint_with_a_cmd_sets_both_and_an_empty_cmd_is_kept() -> None:
    both = config_of(compose([], ConfigChanges(entrypoint=("/app",), cmd=("-v",)), platform=AMD64, epoch=0,
                             base=base()))["config"]
    assert (both["Entrypoint"], both["Cmd"]) == (["/app"], ["-v"])
    empty = config_of(compose([], ConfigChanges(cmd=()), platform=AMD64, epoch=0, base=base()))["config"]
    assert (empty["Entrypoint"], empty["Cmd"]) == (["/docker-entrypoint.sh"], [])


def test_a_base_without_path_gets_the_default_one_first() -> None:
    doc = json.loads(json.dumps(BASE_CONFIG))
    doc["config"]["Env"] = ["A=1"]
    config = config_of(compose([], ConfigChanges(), platform=AMD64, epoch=0, base=Base(ConfigFile.from_json(doc), ())))["config"]
    assert config["Env"] == [DEFAULT_PATH, "A=1"]


def test_annotations_go_on_the_manifest_not_the_config() -> None:
    image = compose([layer("a")], ConfigChanges(annotations=(("org.opencontainers.image.source", "git-repo"),)),
                    platform=AMD64, epoch=0)
    assert json.loads(image.manifest_bytes)["annotations"] == {"org.opencontainers.image.source": "git-repo"}
    assert b"git-repo" not in image.config_bytes
    assert image.config_bytes == compose([layer("a")], ConfigChanges(), platform=AMD64, epoch=0).config_bytes


# ---- digests depend on content, never on how it was put together


def _digest(layers: list[Layer], changes: ConfigChanges, epoch: int = 0, platform: Platform = AMD64) -> Digest:
    return compose(layers, changes, platform=platform, epoch=epoch, base=base()).digest


def test_the_same_inputs_give_the_same_bytes() -> None:
    a = compose([layer("x"), layer("y")], ConfigChanges(env=(("A", "1"),)), platform=AMD64, epoch=5, base=base())
    b = compose([layer("x"), layer("y")], ConfigChanges(env=(("A", "1"),)), platform=AMD64, epoch=5, base=base())
    assert (a.config_bytes, a.manifest_bytes) == (b.config_bytes, b.manifest_bytes)


def test_label_and_port_order_do_not_change_the_digest() -> None:
    one = ConfigChanges(labels=(("a", "1"), ("b", "2")), expose=("1/tcp", "2/udp"))
    two = ConfigChanges(labels=(("b", "2"), ("a", "1")), expose=("2/udp", "1/tcp"))
    assert _digest([layer("x")], one) == _digest([layer("x")], two)


@pytest.mark.parametrize("other", [
    lambda: _digest([layer("y"), layer("x")], ConfigChanges()),  # layer order
    lambda: _digest([layer("x")], ConfigChanges(), epoch=1),  # created
    lambda: _digest([layer("x")], ConfigChanges(), platform=ARM64),
    lambda: _digest([layer("x")], ConfigChanges(env=(("B", "1"), ("A", "1")))),  # env order is meaningful
    lambda: _digest([layer("x")], ConfigChanges(annotations=(("a", "1"),))),
])
def test_each_input_reaches_the_digest(other: Any) -> None:
    reference = _digest([layer("x"), layer("y")], ConfigChanges(env=(("A", "1"), ("B", "1"))))
    assert other() != reference


# ---- indexes


def test_compose_index_lists_each_platform_in_order() -> None:
    images = [compose([layer(str(p))], ConfigChanges(), platform=p, epoch=0) for p in (AMD64, ARM64)]
    built = compose_index(images)
    doc = json.loads(built.index_bytes)
    check_schema("image-index-schema.json", doc)
    assert [m["platform"] for m in doc["manifests"]] == [{"architecture": "amd64", "os": "linux"},
                                                          {"architecture": "arm64", "os": "linux"}]
    assert [m["digest"] for m in doc["manifests"]] == [str(i.digest) for i in images]
    assert str(built.digest) == "sha256:" + hashlib.sha256(built.index_bytes).hexdigest()
    assert top_descriptor(built) == built.descriptor
    blobs = json_blobs(built)
    assert set(blobs) == {built.digest, *(i.digest for i in images), *(i.config_descriptor.digest for i in images)}
    assert all(Digest.of_bytes(data) == digest for digest, data in blobs.items())
    assert compose_index(list(reversed(images))).digest != built.digest


def test_top_descriptor_of_one_image_has_no_platform() -> None:
    image = compose([layer("a")], ConfigChanges(), platform=ARM64, epoch=0)
    top = top_descriptor(image)
    assert top.platform is None
    assert (top.digest, top.size, top.media_type) == (image.digest, image.manifest_descriptor.size,
                                                     image.manifest_descriptor.media_type)


def test_a_base_without_history_keeps_each_layer_with_its_own_entry() -> None:
    """History entries name layers in order: the new layer's must not slide onto the base's."""
    doc = json.loads(json.dumps(BASE_CONFIG))
    del doc["history"]
    bare = Base(config=ConfigFile.from_json(doc), layers=(layer("base"),))
    image = compose([layer("new")], ConfigChanges(), platform=AMD64, epoch=0, base=bare)
    read = ConfigFile.from_json(config_of(image))
    assert [h.created_by for h in read.layer_history()] == ["", "lamina: add new"]
