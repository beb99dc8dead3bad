"""The build spec: the TOML file and the CLI flags both become one BuildSpec.

Everything a flag can say, the file can say, under the same name (``--oci-dir`` is
``oci_dir``). Paths in the file are relative to the file's directory; on the command line,
to the working directory. Merging (flags over file): scalars are replaced; ``env``,
``labels`` and ``annotations`` merge by key; ``expose`` is a union; ``tags`` given as flags
replace the file's; layers given as flags come after the file's layers.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from lamina.limits import MAX_SPEC, TooLarge, read_limited
from lamina.errors import SpecError, UsageError
from lamina.essentials import Essentials
from lamina.image import ConfigChanges
from lamina.layers.compression import Compression
from lamina.model import Platform, Reference
from lamina.sources.files import AddSpec, CopyFromSpec, Source

if TYPE_CHECKING:  # Debian packages (apt, deb) are imported by the builds that name some
    from lamina.sources.apt import AptSource, Locked
    from lamina.sources.deb import DebFile

DEFAULT_SPEC = "lamina.toml"
_MODE = re.compile(r"^0?[0-7]{3,4}$")
_PORT = re.compile(r"^(\d{1,5})(?:/(tcp|udp|sctp))?$")



MAX_KEY_DEPTH = 32  # dotted keys and table headers; tomllib's memory grows with the square of the depth


def shallow_toml(text: str, path: str) -> str:
    """``text``, once no key in it is dotted deeper than MAX_KEY_DEPTH: a 40 kB file with one
    20,000-part key made tomllib hold 1.6 GB before any other check could run."""
    for number, line in enumerate(text.splitlines(), start=1):
        key = line.split("=", 1)[0]
        if key.count(".") > MAX_KEY_DEPTH:
            raise SpecError(path, "", f"line {number}: a key nested more than {MAX_KEY_DEPTH} levels deep")
    return text


@attrs.frozen
class FilesLayer:
    adds: tuple[Source, ...]
    label: str = ""  # set for layers lamina generates ("essentials")

    def describe(self) -> str:
        if self.label == "essentials":
            return "lamina: essentials " + ", ".join(a.dst for a in self.adds)
        verb = "copy" if all(isinstance(a, CopyFromSpec) for a in self.adds) else "add"
        return f"lamina: {verb} " + ", ".join(a.describe() for a in self.adds)


@attrs.frozen
class TarballLayer:
    src: str
    dst: str = "/"
    sha256: str | None = None
    key: str = ""

    def describe(self) -> str:
        return f"lamina: add tarball {os.path.basename(self.src)} -> {self.dst}"


@attrs.frozen
class DebsLayer:
    """Debian packages as one layer: ``--deb`` files and ``--package`` names from ``[apt]`` sources."""

    debs: tuple[DebFile, ...] = ()
    packages: tuple[str, ...] = ()  # NAME or NAME=VERSION
    allow_overwrite: bool = False  # a package may replace another package's file (otherwise an error)

    def describe(self) -> str:
        names = sorted({os.path.basename(d.key or d.path) for d in self.debs} | set(self.packages))
        return "lamina: packages " + ", ".join(names)


LayerSpec = FilesLayer | TarballLayer | DebsLayer


@attrs.frozen
class BaseSpec:
    """``base = "…"`` (or ``{ image = "…", sha256 = "…" }``): the image to build on."""

    image: str
    sha256: str | None = None
    key: str = ""


@attrs.frozen
class BuildSpec:
    layers: tuple[LayerSpec, ...] = ()
    base: BaseSpec | None = None
    remove: tuple[str, ...] = ()
    hermetic: bool = False
    platforms: tuple[Platform, ...] = ()  # empty: the base's platform, else linux/amd64
    docker_platform: Platform | None = None  # which image manifest.json describes (default: the first)
    arch_check: bool = True
    lint: bool = True
    lint_ignore: tuple[str, ...] = ()
    sbom: str | None = None  # "spdx": an SPDX 2.3 document beside the output
    sbom_attach: bool = False  # ... and as an OCI artifact referring to the image
    provenance: bool = False  # SLSA provenance attached to the image (lamina.provenance)
    config: ConfigChanges = ConfigChanges()
    essentials: Essentials = Essentials()
    tags: tuple[Reference, ...] = ()
    output: Path | None = None
    oci_dir: Path | None = None
    compression: Compression = Compression.GZIP
    source_date_epoch: int | None = None
    metadata_file: Path | None = None
    apt: tuple[AptSource, ...] = ()  # repositories --package names are resolved from
    locked_packages: tuple[Locked, ...] = ()  # from lamina.lock: packages fetched as pinned, never re-resolved
    cache_repo: str | None = None  # REGISTRY/REPO: the layer cache shared through a registry
    cache_repo_readonly: bool = False  # look layers up there, never write (untrusted branches)
    depfile: Path | None = None  # Make rule: the outputs depend on every file the build read


# ---- value parsers shared by flags and the file; each raises UsageError with the bad value


def parse_mode(text: str | int) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        if 0 <= text <= 0o7777:
            return text
    elif isinstance(text, str) and _MODE.match(text):
        return int(text, 8)
    raise UsageError(f"bad mode {text!r}: expected octal like 0755")


def parse_add(text: str) -> AddSpec:
    """``SRC:DST[:MODE]``; SRC may itself contain ':' (DST and MODE are taken from the right)."""
    parts = text.split(":")
    mode = None
    if len(parts) >= 3 and re.match(r"^\d+$", parts[-1]):
        mode = parse_mode(parts.pop())
    if len(parts) < 2 or not parts[-1] or not all(parts[:-1]):
        raise UsageError(f"bad --add {text!r}: expected SRC:DST[:MODE], e.g. hello:/hello:0755")
    src = ":".join(parts[:-1])
    return AddSpec(src=src, dst=parts[-1], mode=mode, key=src)


def parse_sbom(text: str) -> str:
    if text != "spdx":
        raise UsageError(f"bad --sbom {text!r}: lamina writes spdx (SPDX 2.3 JSON)")
    return text


def parse_platforms(text: str) -> tuple[Platform, ...]:
    """``linux/amd64,linux/arm64`` → platforms, normalised, duplicates refused."""
    platforms = tuple(Platform.parse(p) for p in text.split(",") if p.strip())
    if not platforms:
        raise UsageError(f"bad platform list {text!r}")
    if len(set(platforms)) != len(platforms):
        raise UsageError(f"bad platform list {text!r}: a platform is listed twice")
    return platforms


def parse_copy_from(text: str) -> CopyFromSpec:
    """``IMAGE:SRC:DST``: SRC and DST are absolute paths, IMAGE is everything before them."""
    head, sep, dst = text.rpartition(":")
    image, sep2, src = head.rpartition(":")
    if not (sep and sep2 and image and src.startswith("/") and dst):
        raise UsageError(f"bad --copy-from {text!r}: expected IMAGE:SRC:DST with SRC an absolute path, e.g. busybox.tar:/bin/busybox:/bin/")
    return CopyFromSpec(image=image, src=src, dst=dst, key=image)


def parse_tarball(text: str) -> TarballLayer:
    src, sep, dst = text.rpartition(":")
    if not sep or not dst.startswith("/"):
        src, dst = text, "/"
    if not src:
        raise UsageError(f"bad --tarball {text!r}: expected PATH[:DST]")
    return TarballLayer(src, dst, key=src)


def parse_command(text: str, flag: str) -> tuple[str, ...]:
    """A JSON array of strings, or one plain string taken as a single argument."""
    if text.lstrip().startswith("["):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as exc:  # also ints past 4300 digits, deep nesting
            raise UsageError(f"bad {flag} {text[:80]!r}: not a JSON array ({getattr(exc, 'msg', exc)})") from None
        return _string_list(value, f"{flag} {text!r}")
    return (text,)


def _string_list(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"bad {what}: expected a list of strings")
    return tuple(value)


def parse_pair(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"bad {flag} {text!r}: expected KEY=VALUE")
    return key, value


def parse_port(text: str | int) -> str:
    match = _PORT.match(str(text).lower())
    if not match or not 0 < int(match[1]) < 65536:
        raise UsageError(f"bad --expose {text!r}: expected PORT[/tcp|udp|sctp]")
    return f"{int(match[1])}/{match[2] or 'tcp'}"


def parse_epoch(text: str | int, what: str) -> int:
    if isinstance(text, str) and not re.match(r"^[0-9]+$", text.strip()):
        raise UsageError(f"bad {what} {text!r}: expected a whole number of seconds")
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise UsageError(f"bad {what} {text!r}: expected a whole number of seconds") from None
    if value < 0 or value >= 8**11:
        raise UsageError(f"bad {what} {text!r}: out of range")
    return value


def epoch_from_env(environ: Mapping[str, str]) -> int:
    """The one place time enters a build: SOURCE_DATE_EPOCH, else 0 (never the wall clock)."""
    raw = environ.get("SOURCE_DATE_EPOCH", "")
    return parse_epoch(raw, "SOURCE_DATE_EPOCH") if raw.strip() else 0


def parse_compression(text: str) -> Compression:
    try:
        return Compression(text)
    except ValueError:
        raise UsageError(f"bad compression {text!r}: expected gzip, zstd or none") from None


def parse_tag(text: str) -> Reference:
    ref = Reference.parse(text)
    if ref.digest:
        raise UsageError(f"bad tag {text!r}: a tag cannot carry a digest")
    return ref


# ---- the file


_TOP_KEYS = {
    "layer", "base", "remove", "hermetic", "platform", "platforms", "docker_platform", "arch_check",
    "ca_certs", "accounts", "tmp", "tzdata", "lint", "lint_ignore", "sbom", "sbom_attach", "provenance", "entrypoint", "cmd", "env", "workdir", "user", "labels", "annotations",
    "expose", "stop_signal", "tags", "output", "oci_dir", "compression", "source_date_epoch",
    "metadata_file", "apt", "cache_repo", "depfile",
}


class _Reader:
    """Reads one spec file, naming the file and key in every error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent

    def fail(self, key: str, message: str) -> SpecError:
        return SpecError(str(self.path), key, message)

    def wrap(self, key: str, func: Any, *args: Any) -> Any:
        try:
            return func(*args)
        except UsageError as exc:
            raise self.fail(key, str(exc)) from None

    def typed(self, data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
        value = data[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(where + key, f"expected {names}, got {type(value).__name__}")
        return value

    def rel(self, value: str) -> str:
        return str(self.base / value) if not os.path.isabs(value) else value

    def table(self, data: Mapping[str, Any], key: str) -> tuple[tuple[str, str], ...]:
        value = self.typed(data, key, dict)
        for k, v in value.items():
            if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                raise self.fail(f"{key}.{k}", "expected a string")
        return tuple((k, str(v)) for k, v in value.items())

    def command(self, data: Mapping[str, Any], key: str) -> tuple[str, ...]:
        value = self.typed(data, key, (str, list))
        if isinstance(value, str):
            return (value,)
        strings: tuple[str, ...] = self.wrap(key, _string_list, value, key)
        return strings

    def layer(self, index: int, data: Any) -> LayerSpec:
        where = f"layer[{index}]"
        if not isinstance(data, dict):
            raise self.fail(where, "expected a table")
        if "debs" in data or "packages" in data:
            return self.debs_layer(where, data)
        unknown = set(data) - {"entries", "tarball", "dst", "sha256", "comment"}
        if unknown:
            raise self.fail(f"{where}.{sorted(unknown)[0]}", "unknown key")
        if "tarball" in data:
            if "entries" in data:
                raise self.fail(where, "a layer has either 'tarball' or 'entries', not both")
            src = self.typed(data, "tarball", str, where + ".")
            dst = self.typed(data, "dst", str, where + ".") if "dst" in data else "/"
            return TarballLayer(self.rel(src), dst, self.pin(data, where), key=src)
        if "entries" not in data:
            raise self.fail(where, "needs 'entries' (a list of {src, dst}) or 'tarball'")
        entries = self.typed(data, "entries", list, where + ".")
        if not entries:
            raise self.fail(f"{where}.entries", "is empty")
        return FilesLayer(tuple(self.entry(f"{where}.entries[{i}]", e) for i, e in enumerate(entries)))

    def debs_layer(self, where: str, data: Mapping[str, Any]) -> DebsLayer:
        """``debs = ["x.deb", {path = "y.deb", sha256 = "…"}]`` and/or ``packages = ["libc6"]``."""
        from lamina.sources.apt import parse_package
        from lamina.sources.deb import DebFile

        unknown = set(data) - {"debs", "packages", "allow_overwrite", "comment"}
        if unknown:
            raise self.fail(f"{where}.{sorted(unknown)[0]}", "unknown key (a package layer has 'debs' and 'packages')")
        debs = []
        for i, item in enumerate(self.typed(data, "debs", list, where + ".") if "debs" in data else []):
            at = f"{where}.debs[{i}]"
            if isinstance(item, str):
                debs.append(DebFile(self.rel(item), key=item))
            elif isinstance(item, dict) and set(item) <= {"path", "sha256"} and isinstance(item.get("path"), str):
                debs.append(DebFile(self.rel(item["path"]), self.pin(item, at), key=item["path"]))
            else:
                raise self.fail(at, "expected a path or { path = \"…\", sha256 = \"…\" }")
        packages = self.typed(data, "packages", list, where + ".") if "packages" in data else []
        if not all(isinstance(p, str) for p in packages):
            raise self.fail(f"{where}.packages", "expected a list of NAME or NAME=VERSION")
        names = tuple(self.wrap(f"{where}.packages", parse_package, p) for p in packages)
        if not debs and not names:
            raise self.fail(where, "a package layer needs 'debs' or 'packages'")
        allow = self.typed(data, "allow_overwrite", bool, where + ".") if "allow_overwrite" in data else False
        return DebsLayer(tuple(debs), names, allow)

    def apt(self, data: Any) -> tuple[AptSource, ...]:
        """``[apt] sources = ["URL|DIR SUITE COMPONENT", …]``, ``keyring = "…"`` (checks their Release signatures)."""
        from lamina.sources.apt import parse_apt_source

        if not isinstance(data, dict) or set(data) - {"sources", "keyring"}:
            raise self.fail("apt", "expected a table with 'sources' (a list of \"URL SUITE COMPONENT\") and 'keyring'")
        keyring = self.rel(self.typed(data, "keyring", str, "apt.")) if "keyring" in data else ""
        sources = self.typed(data, "sources", list, "apt.") if "sources" in data else []
        out = []
        for i, text in enumerate(sources):
            if not isinstance(text, str):
                raise self.fail(f"apt.sources[{i}]", "expected \"URL|DIR SUITE COMPONENT\"")
            parts = text.split()
            if len(parts) == 3 and not re.match(r"^[a-z]+://", parts[0]):
                parts[0] = self.rel(parts[0])
            out.append(attrs.evolve(self.wrap(f"apt.sources[{i}]", parse_apt_source, *parts), keyring=keyring))
        return tuple(out)

    def pin(self, data: Mapping[str, Any], where: str) -> str | None:
        if "sha256" not in data:
            return None
        value: str = self.typed(data, "sha256", str, where + ".")
        if not re.match(r"^(sha256:)?[0-9a-f]{64}$", value):
            raise self.fail(f"{where}.sha256", f"not a sha256 digest: {value!r}")
        return value.removeprefix("sha256:")

    def image(self, value: str) -> str:
        """An image reference with a path: relative to the spec file like every path."""
        transport, sep, rest = value.partition(":")
        if sep and transport in ("docker-archive", "oci-archive", "oci"):
            return f"{transport}:{self.rel(rest)}"
        return value if value == "scratch" else self.rel(value)

    def entry(self, where: str, data: Any) -> Source:
        if not isinstance(data, dict):
            raise self.fail(where, "expected a table like {src = \"hello\", dst = \"/hello\"}")
        unknown = set(data) - {"src", "dst", "mode", "uid", "gid", "from", "sha256"}
        if unknown:
            raise self.fail(f"{where}.{sorted(unknown)[0]}", "unknown key")
        for required in ("src", "dst"):
            if required not in data:
                raise self.fail(where, f"missing '{required}'")
        mode = self.wrap(f"{where}.mode", parse_mode, data["mode"]) if "mode" in data else None
        ids = {k: self.typed(data, k, int, where + ".") for k in ("uid", "gid") if k in data}
        for k, v in ids.items():
            if not 0 <= v <= 2**32 - 1:
                raise self.fail(f"{where}.{k}", "must be between 0 and 4294967295")
        src = self.typed(data, "src", (str, dict), where + ".")
        dst = self.typed(data, "dst", str, where + ".")
        per_platform: tuple[tuple[str, str], ...] = ()
        if isinstance(src, dict):
            if "from" in data:
                raise self.fail(f"{where}.src", "a per-platform table is for host files, not 'from' entries")
            for key, value in src.items():
                self.wrap(f"{where}.src.{key}", Platform.parse, key)
                if not isinstance(value, str):
                    raise self.fail(f"{where}.src.{key}", "expected a path")
            per_platform = tuple((str(Platform.parse(k)), self.rel(v)) for k, v in src.items())
            src = "{platform}"
        if "from" in data:
            image = self.typed(data, "from", str, where + ".")
            if not src.startswith("/"):
                raise self.fail(f"{where}.src", "a path in the image must be absolute")
            return CopyFromSpec(self.image(image), src, dst, mode, sha256=self.pin(data, where), key=image, **ids)
        return AddSpec(src=self.rel(src) if not per_platform else src, dst=dst, mode=mode, sha256=self.pin(data, where),
                       key=src, per_platform=per_platform, **ids)

    def read(self) -> BuildSpec:
        import tomllib  # a spec file's reader only: flags alone never parse TOML

        try:
            with open(self.path, "rb") as f:
                data = tomllib.loads(shallow_toml(read_limited(f, MAX_SPEC).decode(), str(self.path)))
        except OSError as exc:
            raise SpecError(str(self.path), "", f"cannot read: {exc.strerror}") from None
        except TooLarge as exc:
            raise SpecError(str(self.path), "", f"{exc}: not a spec") from None
        except RecursionError:
            raise SpecError(str(self.path), "", "not valid TOML: nested too deeply") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SpecError(str(self.path), "", f"not valid TOML: {exc}") from None
        unknown = set(data) - _TOP_KEYS
        if unknown:
            raise self.fail(sorted(unknown)[0], "unknown key")
        fields: dict[str, Any] = {}
        if "layer" in data:
            layers = self.typed(data, "layer", list)
            fields["layers"] = tuple(self.layer(i, layer) for i, layer in enumerate(layers))
        if "apt" in data:
            fields["apt"] = self.apt(data["apt"])
        if "base" in data:
            base = self.typed(data, "base", (str, dict))
            if isinstance(base, dict):
                if set(base) - {"image", "sha256"} or "image" not in base:
                    raise self.fail("base", "expected a string or { image = \"…\", sha256 = \"…\" }")
                image = self.typed(base, "image", str, "base.")
                fields["base"] = BaseSpec(self.image(image), self.pin(base, "base"), key=image)
            else:
                fields["base"] = BaseSpec(self.image(base), key=base)
        if "remove" in data:
            paths = self.typed(data, "remove", list)
            if not all(isinstance(p, str) for p in paths):
                raise self.fail("remove", "expected a list of paths")
            fields["remove"] = tuple(paths)
        if "hermetic" in data:
            fields["hermetic"] = self.typed(data, "hermetic", bool)
        if "platform" in data and "platforms" in data:
            raise self.fail("platforms", "give 'platform' or 'platforms', not both")
        if "platform" in data:
            fields["platforms"] = self.wrap("platform", parse_platforms, self.typed(data, "platform", str))
        if "platforms" in data:
            listed = self.typed(data, "platforms", list)
            if not listed or not all(isinstance(p, str) for p in listed):
                raise self.fail("platforms", "expected a non-empty list like [\"linux/amd64\", \"linux/arm64\"]")
            fields["platforms"] = self.wrap("platforms", parse_platforms, ",".join(listed))
        if "docker_platform" in data:
            fields["docker_platform"] = self.wrap("docker_platform", Platform.parse, self.typed(data, "docker_platform", str))
        if "arch_check" in data:
            fields["arch_check"] = self.typed(data, "arch_check", bool)
        if "lint" in data:
            fields["lint"] = self.typed(data, "lint", bool)
        if "sbom" in data:
            fields["sbom"] = self.wrap("sbom", parse_sbom, self.typed(data, "sbom", str))
        if "sbom_attach" in data:
            fields["sbom_attach"] = self.typed(data, "sbom_attach", bool)
        if "provenance" in data:
            fields["provenance"] = self.typed(data, "provenance", bool)
        if "lint_ignore" in data:
            ids = self.typed(data, "lint_ignore", list)
            if not all(isinstance(i, str) and re.match(r"^L\d{3}$", i) for i in ids):
                raise self.fail("lint_ignore", "expected a list of finding ids like \"L006\"")
            fields["lint_ignore"] = tuple(ids)
        config: dict[str, Any] = {}
        for key in ("entrypoint", "cmd"):
            if key in data:
                config[key] = self.command(data, key)
        for key in ("env", "labels", "annotations"):
            if key in data:
                config[key] = self.table(data, key)
        for key in ("workdir", "user", "stop_signal"):
            if key in data:
                config[key] = self.typed(data, key, str)
        if "expose" in data:
            ports = self.typed(data, "expose", list)
            config["expose"] = tuple(self.wrap(f"expose[{i}]", parse_port, p) for i, p in enumerate(ports))
        fields["config"] = ConfigChanges(**config)
        essentials: dict[str, Any] = {}
        if "ca_certs" in data:
            value = self.typed(data, "ca_certs", (bool, list))
            if isinstance(value, list):
                if not value or not all(isinstance(v, str) for v in value):
                    raise self.fail("ca_certs", "expected true or a list of PEM files and directories")
                essentials["ca_certs"] = tuple(self.rel(v) for v in value)
            elif value:
                essentials["ca_certs"] = ()
        for key in ("accounts", "tmp"):
            if key in data:
                essentials[key] = self.typed(data, key, bool)
        if "tzdata" in data:
            value = self.typed(data, "tzdata", (bool, str))
            if value is not False:
                essentials["tzdata"] = "" if value is True else self.rel(value)
        fields["essentials"] = Essentials(**essentials)
        if "tags" in data:
            tags = self.typed(data, "tags", list)
            if not all(isinstance(t, str) for t in tags):
                raise self.fail("tags", "expected a list of strings")
            fields["tags"] = tuple(self.wrap(f"tags[{i}]", parse_tag, t) for i, t in enumerate(tags))
        for key in ("output", "oci_dir", "metadata_file", "depfile"):
            if key in data:
                fields[key] = Path(self.rel(self.typed(data, key, str)))
        if "compression" in data:
            fields["compression"] = self.wrap("compression", parse_compression, self.typed(data, "compression", str))
        if "source_date_epoch" in data:
            fields["source_date_epoch"] = self.wrap(
                "source_date_epoch", parse_epoch, self.typed(data, "source_date_epoch", int), "source_date_epoch"
            )
        if "cache_repo" in data:
            from lamina.registry.cache_repo import parse_cache_repo

            text = self.typed(data, "cache_repo", str)
            self.wrap("cache_repo", parse_cache_repo, text)
            fields["cache_repo"] = text
        return BuildSpec(**fields)


def read_spec(path: Path) -> BuildSpec:
    return _Reader(path).read()


def _merge_pairs(base: Sequence[tuple[str, str]], over: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    merged = dict(base)
    merged.update(over)
    return tuple(merged.items())


def merge(file_spec: BuildSpec, flags: Mapping[str, Any]) -> BuildSpec:
    """Apply flag values (already parsed; None or empty means "not given") over a file spec."""
    changes: dict[str, Any] = {}
    for key in ("platforms", "docker_platform", "output", "oci_dir", "compression", "source_date_epoch",
                "metadata_file", "depfile", "base", "cache_repo"):
        if flags.get(key) is not None:
            changes[key] = flags[key]
    if flags.get("hermetic"):
        changes["hermetic"] = True
    if flags.get("cache_repo_readonly"):
        changes["cache_repo_readonly"] = True
    if flags.get("arch_check") is False:
        changes["arch_check"] = False
    if flags.get("lint") is False:
        changes["lint"] = False
    if flags.get("sbom"):
        changes["sbom"] = flags["sbom"]
    if flags.get("sbom_attach"):
        changes["sbom_attach"] = True
    if flags.get("provenance"):
        changes["provenance"] = True
    if flags.get("lint_ignore"):
        changes["lint_ignore"] = (*file_spec.lint_ignore, *flags["lint_ignore"])
    if flags.get("remove"):
        changes["remove"] = (*file_spec.remove, *flags["remove"])
    if flags.get("tags"):
        changes["tags"] = tuple(flags["tags"])
    if flags.get("layers"):
        changes["layers"] = (*file_spec.layers, *flags["layers"])
    if flags.get("apt"):
        changes["apt"] = (*file_spec.apt, *flags["apt"])
    if flags.get("apt_keyring"):
        changes["apt"] = tuple(attrs.evolve(s, keyring=flags["apt_keyring"]) for s in changes.get("apt", file_spec.apt))
    config = file_spec.config
    config_changes: dict[str, Any] = {}
    for key in ("entrypoint", "cmd", "workdir", "user", "stop_signal"):
        if flags.get(key) is not None:
            config_changes[key] = flags[key]
    for key in ("env", "labels", "annotations"):
        if flags.get(key):
            config_changes[key] = _merge_pairs(getattr(config, key), flags[key])
    if flags.get("expose"):
        config_changes["expose"] = tuple(dict.fromkeys((*config.expose, *flags["expose"])))
    changes["config"] = attrs.evolve(config, **config_changes)
    essentials = file_spec.essentials
    if flags.get("ca_certs"):
        given = tuple(p for p in flags["ca_certs"] if p != SYSTEM_CA)
        essentials = attrs.evolve(essentials, ca_certs=given)
    if flags.get("accounts"):
        essentials = attrs.evolve(essentials, accounts=True)
    if flags.get("tmp"):
        essentials = attrs.evolve(essentials, tmp=True)
    if flags.get("tzdata") is not None:
        essentials = attrs.evolve(essentials, tzdata="" if flags["tzdata"] == SYSTEM_TZ else flags["tzdata"])
    changes["essentials"] = essentials
    return attrs.evolve(file_spec, **changes)


SYSTEM_CA = "@system"  # what a bare --ca-certs means: the build machine's bundle
SYSTEM_TZ = "@system"
