"""lamina inspect: what an image holds, layer by layer, for people (text) and machines (JSON)."""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from lamina.layers.entries import display
from lamina.model import mediatypes
from lamina.sources.archive import ImageSource, entries, images, is_index, layer_openers, manifests
from lamina.sources.rootfs import MergedFS, whiteout_of
from lamina.sources.tarball import detect

_MAGIC_TYPES = {"gzip": mediatypes.OCI_LAYER_GZIP, "zstd": mediatypes.OCI_LAYER_ZSTD, "tar": mediatypes.OCI_LAYER}

_KIND_CHAR = {
    tarfile.DIRTYPE: "d", tarfile.SYMTYPE: "l", tarfile.LNKTYPE: "h", tarfile.CHRTYPE: "c",
    tarfile.BLKTYPE: "b", tarfile.FIFOTYPE: "p",
}

Opener = Callable[[], BinaryIO]


class _Counting(io.RawIOBase):
    """Counts and hashes the stored bytes read through it, and keeps their first bytes (the
    compression's magic): compressed streams cannot tell()."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self.count = 0
        self.hash = hashlib.sha256()
        self.head = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        if len(self.head) < 8:
            self.head += data[: 8 - len(self.head)]
        self.count += n
        self.hash.update(data)
        return n

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


def read_layers(name: str, openers: list[Opener]) -> tuple[MergedFS, list[dict[str, Any]]]:
    """The seam inspect reads images through: each layer's stored (any compression) tar
    stream → the merged filesystem and, per layer, its stored and unpacked sizes, digest,
    compression and members, in one pass."""
    counted: list[_Counting] = []
    members: list[list[dict[str, Any]]] = [[] for _ in openers]

    def counting(opener: Opener) -> Opener:
        def open_counted() -> BinaryIO:
            counted.append(_Counting(opener()))
            reader: Any = io.BufferedReader(counted[-1], 1 << 20)
            return reader  # type: ignore[no-any-return]
        return open_counted

    def visit(index: int, path: str, member: tarfile.TarInfo, _archive: tarfile.TarFile) -> None:
        members[index].append({
            "path": display(path) or ".",
            "type": _KIND_CHAR.get(member.type, "-"),
            "mode": member.mode & 0o7777,
            "uid": member.uid,
            "gid": member.gid,
            "size": member.size if member.isfile() else 0,
            "mtime": int(member.mtime),
            **({"link": display(member.linkname)} if member.linkname else {}),
        })

    fs = MergedFS.read(name, [counting(o) for o in openers], visit)
    records = []
    for index, stored in enumerate(counted):
        records.append({
            "digest": f"sha256:{stored.hash.hexdigest()}",
            "media_type": _MAGIC_TYPES.get(detect(stored.head), detect(stored.head)),
            "size": stored.count,
            "uncompressed_size": fs.unpacked[index],
            "diff_id": None,
            "files": len(members[index]),
            "entries": members[index],
        })
    return fs, records


def size_report(fs: MergedFS, layers: list[dict[str, Any]], top: int = 5) -> dict[str, Any]:
    """The filesystem a container sees (the merged filesystem: layers applied, whiteouts
    honoured), and per layer: its largest files and directories, and the bytes later layers
    delete or overwrite."""
    per_layer = []
    for index, layer in enumerate(layers):
        regular = [e for e in layer["entries"] if e["type"] == "-" and whiteout_of(e["path"]) is None]
        files = sorted(regular, key=lambda e: (-e["size"], e["path"]))[:top]
        dirs: dict[str, int] = {}
        for e in regular:
            d = e["path"].rpartition("/")[0] or "/"
            dirs[d] = dirs.get(d, 0) + e["size"]
        per_layer.append({
            "wasted": fs.wasted_in(index),
            "largest_files": [{"path": e["path"], "size": e["size"]} for e in files],
            "largest_dirs": [{"path": d, "size": n} for d, n in sorted(dirs.items(), key=lambda x: (-x[1], x[0]))[:top]],
        })
    return {"bytes": fs.size, "entries": len(fs.nodes), "files": len(fs.files()),
            "wasted": sum(fs.wasted_in(i) for i in range(len(layers))), "layers": per_layer}


def describe(name: str, config: dict[str, Any], openers: list[Opener],
             stored: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One image's record from its config and layer openers. Each layer's digest, size and
    media type are first those of the bytes its opener gives; ``stored`` (per layer: digest,
    media_type, size, diff_id, created_by) puts what the manifest and reader say instead."""
    fs, layers = read_layers(name, openers)
    report = size_report(fs, layers)
    for i, (layer, sizes) in enumerate(zip(layers, report.pop("layers"))):
        layer["created_by"] = ""
        layer.update({k: v for k, v in (stored[i] if stored else {}).items() if v is not None})
        layer["sizes"] = sizes
    return {"filesystem": report, "created": config.get("created"), "config": config.get("config") or {},
            "layers": layers}


def _indexes(source: ImageSource) -> dict[str, list[str]]:
    """Index digest → the platforms it lists, for every index the archive names at top level."""
    found = {}
    for entry in entries(source):
        if entry.descriptor is not None and is_index(entry.descriptor):
            children = manifests(source, entry.descriptor)
            found[str(entry.descriptor.digest)] = [str(c.platform) if c.platform else "?" for c in children]
    return found


def inspect_image(path: Path) -> list[dict[str, Any]]:
    """One record per image (per platform) in the archive or layout."""
    with ImageSource.open(path) as source:
        indexes = _indexes(source)
        out = []
        for image in images(source):
            stored = [{"digest": str(layer.descriptor.digest), "media_type": layer.descriptor.media_type,
                       "size": layer.descriptor.size, "diff_id": str(layer.diff_id), "created_by": layer.created_by}
                      for layer in image.layers]
            record = describe(image.describe(), image.config.to_json(), layer_openers(image), stored)
            out.append({
                "index": next(iter(indexes), None),
                "names": list(image.names),
                "manifest_digest": None if image.derived_manifest else str(image.digest),
                "config_digest": str(image.config_descriptor.digest),
                "platform": str(image.platform),
                **record,
                "created": image.config.created or None,
                "config": image.config.config.to_json(),
            })
        return out


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def _mode_string(kind: str, mode: int) -> str:
    perms = stat.filemode(mode | stat.S_IFREG)[1:]
    return kind + perms


def render(records: list[dict[str, Any]], *, files: bool, sizes: bool = False) -> str:
    lines: list[str] = []
    shown: set[str] = set()
    for rec in records:
        if rec.get("index") and rec["index"] not in shown:
            shown.add(rec["index"])
            count = sum(1 for r in records if r.get("index") == rec["index"])
            lines.append(f"index:      {rec['index']} ({count} platforms)")
            lines.append("")
        if rec["names"]:
            lines.append(f"names:      {', '.join(rec['names'])}")
        if rec["manifest_digest"]:
            lines.append(f"manifest:   {rec['manifest_digest']}")
        lines.append(f"config:     {rec['config_digest']}")
        lines.append(f"platform:   {rec['platform']}")
        lines.append(f"created:    {rec['created']}")
        for key, value in rec["config"].items():
            lines.append(f"{key + ':':<12}{value}")
        total = sum(layer["size"] for layer in rec["layers"])
        lines.append(f"layers:     {len(rec['layers'])} ({_size(total)} compressed)")
        fs = rec["filesystem"]
        lines.append(f"filesystem: {_size(fs['bytes'])} in {fs['entries']} entries (layers merged, whiteouts applied); "
                     f"{_size(fs['wasted'])} wasted (deleted or overwritten by later layers)")
        lines.append(f"  {'#':>2}  {'digest':<19}  {'size':>9}  {'unpacked':>9}  {'files':>6}  created by")
        for i, layer in enumerate(rec["layers"]):
            lines.append(
                f"  {i:>2}  {layer['digest'][:19]}  {_size(layer['size']):>9}  "
                f"{_size(layer['uncompressed_size']):>9}  {layer['files']:>6}  {layer['created_by']}"
            )
            if sizes:
                report = layer["sizes"]
                lines.append(f"        wasted: {_size(report['wasted'])}")
                for kind in ("largest_files", "largest_dirs"):
                    for item in report[kind]:
                        lines.append(f"        {kind.split('_')[1][:-1]:<4} {_size(item['size']):>9}  {item['path']}")
            if files:
                for e in layer["entries"]:
                    link = f" -> {e['link']}" if "link" in e else ""
                    lines.append(
                        f"        {_mode_string(e['type'], e['mode'])} {e['uid']}/{e['gid']} "
                        f"{e['size']:>10}  {e['path']}{link}"
                    )
        lines.append("")
    return "\n".join(lines).rstrip("\n")
