"""spec.merge in process: flags over a spec file. Scalars are replaced; env, labels and
annotations merge by key; expose is a union; tags replace; layers, removals and lint
ignores append; a flag not given leaves the file's value alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lamina.layers.compression import Compression
from lamina.model import Platform
from lamina.spec import (
    BaseSpec,
    BuildSpec,
    FilesLayer,
    merge,
    parse_add,
    parse_command,
    parse_pair,
    parse_platforms,
    parse_port,
    parse_tag,
    read_spec,
)

SPEC = """\
base = "oci:base-layout"
hermetic = true
platforms = ["linux/amd64"]
entrypoint = ["/file-entry"]
cmd = ["file", "cmd"]
workdir = "/file"
user = "1000"
stop_signal = "SIGQUIT"
env = { A = "file-a", B = "file-b" }
labels = { "org.opencontainers.image.title" = "file", keep = "me" }
annotations = { "org.opencontainers.image.source" = "file" }
expose = [80, "53/udp"]
tags = ["file/image:v1"]
output = "file.tar"
compression = "zstd"
source_date_epoch = 100
remove = ["/etc/file"]
lint_ignore = ["L001"]

[[layer]]
entries = [{ src = "hello", dst = "/hello" }]
"""


@pytest.fixture
def spec(tmp_path: Path) -> BuildSpec:
    (tmp_path / "lamina.toml").write_text(SPEC)
    return read_spec(tmp_path / "lamina.toml")


def pairs(*items: str) -> tuple[tuple[str, str], ...]:
    return tuple(parse_pair(item, "--env") for item in items)


def test_no_flags_change_nothing(spec: BuildSpec) -> None:
    assert merge(spec, {}) == spec
    # What the CLI passes for flags not given: None, empty tuples, False for switches.
    not_given: dict[str, Any] = {"layers": [], "remove": (), "env": (), "labels": (), "annotations": (), "expose": (),
                                 "tags": (), "lint_ignore": (), "hermetic": False, "sbom_attach": False,
                                 "cmd": None, "entrypoint": None, "user": None, "output": None, "base": None}
    assert merge(spec, not_given) == spec


def test_scalars_are_replaced(spec: BuildSpec, tmp_path: Path) -> None:
    merged = merge(spec, {
        "entrypoint": parse_command('["/flag-entry"]', "--entrypoint"), "cmd": parse_command("flag", "--cmd"),
        "workdir": "/flag", "user": "65532", "stop_signal": "SIGTERM",
        "output": Path("flag.tar"), "compression": Compression.GZIP, "source_date_epoch": 7,
        "platforms": parse_platforms("linux/arm64,linux/amd64"), "base": BaseSpec("scratch", key="scratch"),
    })
    config = merged.config
    assert (config.entrypoint, config.cmd) == (("/flag-entry",), ("flag",))
    assert (config.workdir, config.user, config.stop_signal) == ("/flag", "65532", "SIGTERM")
    assert (merged.output, merged.compression, merged.source_date_epoch) == (Path("flag.tar"), Compression.GZIP, 7)
    assert merged.platforms == (Platform("linux", "arm64"), Platform("linux", "amd64"))
    assert merged.base == BaseSpec("scratch", key="scratch")
    assert merged.oci_dir is None and merged.hermetic  # not given: the file's


def test_an_explicit_empty_cmd_replaces_the_files(spec: BuildSpec) -> None:
    merged = merge(spec, {"cmd": parse_command("[]", "--cmd")})
    assert merged.config.cmd == ()
    assert merged.config.entrypoint == ("/file-entry",)


def test_env_labels_and_annotations_merge_by_key(spec: BuildSpec) -> None:
    merged = merge(spec, {
        "env": pairs("B=flag-b", "C=flag-c"),
        "labels": pairs("org.opencontainers.image.title=flag"),
        "annotations": pairs("org.opencontainers.image.revision=abc"),
    })
    assert merged.config.env == (("A", "file-a"), ("B", "flag-b"), ("C", "flag-c"))
    assert dict(merged.config.labels) == {"org.opencontainers.image.title": "flag", "keep": "me"}
    assert dict(merged.config.annotations) == {"org.opencontainers.image.source": "file",
                                               "org.opencontainers.image.revision": "abc"}


def test_a_flag_given_twice_keeps_the_last_value(spec: BuildSpec) -> None:
    merged = merge(spec, {"env": pairs("A=first", "A=second")})
    assert dict(merged.config.env)["A"] == "second"


def test_expose_is_a_union_and_tags_replace(spec: BuildSpec) -> None:
    merged = merge(spec, {"expose": (parse_port("8080"), parse_port(80)), "tags": (parse_tag("flag/image:v2"),)})
    assert merged.config.expose == ("80/tcp", "53/udp", "8080/tcp")
    assert merged.tags == (parse_tag("flag/image:v2"),)


def test_layers_removals_and_lint_ignores_append(spec: BuildSpec, tmp_path: Path) -> None:
    flag_layer = FilesLayer((parse_add("more:/more"),))
    merged = merge(spec, {"layers": [flag_layer], "remove": ("/etc/flag",), "lint_ignore": ("L002",)})
    assert len(merged.layers) == 2 and merged.layers[1] == flag_layer
    assert merged.layers[0] == spec.layers[0]
    assert merged.remove == ("/etc/file", "/etc/flag")
    assert merged.lint_ignore == ("L001", "L002")


def test_switches_only_turn_on_what_the_file_left_off(tmp_path: Path) -> None:
    (tmp_path / "lamina.toml").write_text("output = 'x.tar'\n")
    plain = read_spec(tmp_path / "lamina.toml")
    merged = merge(plain, {"hermetic": True, "lint": False, "arch_check": False, "accounts": True})
    assert (merged.hermetic, merged.lint, merged.arch_check, merged.essentials.accounts) == (True, False, False, True)
    assert merge(plain, {"lint": True, "arch_check": True}) == plain


def test_merge_leaves_the_file_spec_untouched(spec: BuildSpec) -> None:
    before = repr(spec)
    merge(spec, {"env": pairs("Z=1"), "user": "0", "layers": [FilesLayer((parse_add("x:/x"),))]})
    assert repr(spec) == before
