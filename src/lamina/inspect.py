"""lamina inspect: what an image holds, layer by layer, for people (text) and machines (JSON)."""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile
from pathlib import Path
from typing import Any

from lamina.errors import ImageError
from lamina.image import Image
from lamina.model import Layer
from lamina.sources.archive import ImageSource, entries, images, is_index, manifests
from lamina.sources.rootfs import hidden, whiteout_of
from lamina.sources.tarball import PaddedAtEnd, open_decompressed

_KIND_CHAR = {
    tarfile.DIRTYPE: "d", tarfile.SYMTYPE: "l", tarfile.LNKTYPE: "h", tarfile.CHRTYPE: "c",
    tarfile.BLKTYPE: "b", tarfile.FIFOTYPE: "p",
}


class _Counting(io.RawIOBase):
    """Counts (and hashes) the bytes read through it: compressed streams cannot tell()."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.count = 0
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        self.hash.update(data)
        return n


def _layer_record(image: Image, layer: Layer) -> dict[str, Any]:
    members: list[dict[str, Any]] = []
    assert image.blobs is not None
    with image.blobs.open(layer.descriptor) as raw:
        stored = _Counting(raw)
        try:
            stream = _Counting(open_decompressed(io.BufferedReader(stored, 1 << 20)))  # type: ignore[arg-type]
            with tarfile.open(fileobj=io.BufferedReader(PaddedAtEnd(stream), 1 << 20), mode="r|") as archive:
                for member in archive:
                    members.append({
                        "path": member.name,
                        "type": _KIND_CHAR.get(member.type, "-"),
                        "mode": member.mode & 0o7777,
                        "uid": member.uid,
                        "gid": member.gid,
                        "size": member.size if member.isfile() else 0,
                        "mtime": int(member.mtime),
                        **({"link": member.linkname} if member.linkname else {}),
                    })
            while stream.read(1 << 20):  # drain, so the blob's digest is verified
                pass
            while stored.read(1 << 20):
                pass
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ImageError(f"{image.describe()}: layer {layer.descriptor.digest} is not a readable tar ({exc})") from None
    if stream.hash.hexdigest() != layer.diff_id.hex:
        raise ImageError(f"{image.describe()}: layer {layer.descriptor.digest}: uncompressed content does not match "
                         f"its diff_id {layer.diff_id}")
    return {
        "digest": str(layer.descriptor.digest),
        "media_type": layer.descriptor.media_type,
        "size": stored.count,
        "uncompressed_size": stream.count,
        "diff_id": str(layer.diff_id),
        "files": len(members),
        "entries": members,
    }


def size_report(layers: list[list[dict[str, Any]]], top: int = 5) -> dict[str, Any]:
    """The filesystem a container sees (layers applied, whiteouts honoured), and per layer:
    its largest files and directories, and the bytes later layers delete or overwrite."""
    sizes: dict[str, tuple[int, int]] = {}  # path -> (size, layer index)
    wasted = [0] * len(layers)

    def drop(paths: list[str]) -> None:
        for p in paths:
            size, layer = sizes.pop(p)
            wasted[layer] += size

    for index, layer_entries in enumerate(layers):
        for e in layer_entries:
            path = e["path"].rstrip("/")
            whiteout = whiteout_of(path)
            if whiteout is not None:
                drop([p for p, (_, i) in sizes.items() if i < index and hidden(p, *whiteout)])
                continue
            if path in sizes and sizes[path][1] < index:
                drop([path])
            sizes[path] = (e["size"], index)
    per_layer = []
    for index, layer_entries in enumerate(layers):
        regular = [e for e in layer_entries if e["type"] == "-" and whiteout_of(e["path"].rstrip("/")) is None]
        files = sorted(regular, key=lambda e: (-e["size"], e["path"]))[:top]
        dirs: dict[str, int] = {}
        for e in regular:
            d = e["path"].rstrip("/").rpartition("/")[0] or "/"
            dirs[d] = dirs.get(d, 0) + e["size"]
        per_layer.append({
            "wasted": wasted[index],
            "largest_files": [{"path": e["path"], "size": e["size"]} for e in files],
            "largest_dirs": [{"path": d, "size": n} for d, n in sorted(dirs.items(), key=lambda x: (-x[1], x[0]))[:top]],
        })
    return {"bytes": sum(s for s, _ in sizes.values()), "entries": len(sizes), "wasted": sum(wasted), "layers": per_layer}


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
            layers = []
            for layer in image.layers:
                record = _layer_record(image, layer)
                record["created_by"] = layer.created_by
                layers.append(record)
            report = size_report([layer["entries"] for layer in layers])
            for layer, sizes in zip(layers, report.pop("layers")):
                layer["sizes"] = sizes
            out.append({
                "index": next(iter(indexes), None),
                "names": list(image.names),
                "filesystem": report,
                "manifest_digest": None if image.derived_manifest else str(image.digest),
                "config_digest": str(image.config_descriptor.digest),
                "platform": str(image.platform),
                "created": image.config.created or None,
                "config": image.config.config.to_json(),
                "layers": layers,
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
