"""lamina inspect: what an image holds, layer by layer, for people (text) and machines (JSON)."""

from __future__ import annotations

import stat
import tarfile
from pathlib import Path
from typing import Any

from lamina.errors import ImageError
from lamina.sources.archive import ImageSource, StoredImage, images
from lamina.sources.tarball import open_decompressed

_KIND_CHAR = {
    tarfile.DIRTYPE: "d", tarfile.SYMTYPE: "l", tarfile.LNKTYPE: "h", tarfile.CHRTYPE: "c",
    tarfile.BLKTYPE: "b", tarfile.FIFOTYPE: "p",
}


class _Counting:
    """Counts the uncompressed bytes tarfile reads (compressed streams cannot tell())."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self.count += len(data)
        return data


def _layer_entries(source: ImageSource, image: StoredImage, index: int) -> tuple[int, list[dict[str, Any]]]:
    desc = image.layers[index]
    entries: list[dict[str, Any]] = []
    size = 0
    with source.open_layer(desc) as raw:
        try:
            stream = _Counting(open_decompressed(raw))
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for member in archive:
                    entries.append({
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
            size = stream.count
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ImageError(f"{source.name}: layer {desc.digest} is not a readable tar ({exc})") from None
    return size, entries


def inspect_image(path: Path) -> list[dict[str, Any]]:
    """One record per image in the archive or layout."""
    with ImageSource.open(path) as source:
        out = []
        for image in images(source):
            config = image.config
            history = [h for h in config.get("history") or [] if not h.get("empty_layer")]
            layers = []
            for i, desc in enumerate(image.layers):
                usize, entries = _layer_entries(source, image, i)
                layers.append({
                    "digest": str(desc.digest),
                    "media_type": desc.media_type,
                    "size": desc.size,
                    "uncompressed_size": usize,
                    "diff_id": (config.get("rootfs", {}).get("diff_ids") or [None] * len(image.layers))[i],
                    "files": len(entries),
                    "created_by": history[i].get("created_by", "") if i < len(history) else "",
                    "entries": entries,
                })
            out.append({
                "names": list(image.names),
                "manifest_digest": str(image.manifest_descriptor.digest) if image.manifest_descriptor else None,
                "config_digest": str(image.config_descriptor.digest),
                "platform": "/".join(p for p in (config.get("os"), config.get("architecture"), config.get("variant")) if p),
                "created": config.get("created"),
                "config": config.get("config") or {},
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


def render(records: list[dict[str, Any]], *, files: bool) -> str:
    lines: list[str] = []
    for rec in records:
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
        lines.append(f"  {'#':>2}  {'digest':<19}  {'size':>9}  {'unpacked':>9}  {'files':>6}  created by")
        for i, layer in enumerate(rec["layers"]):
            lines.append(
                f"  {i:>2}  {layer['digest'][:19]}  {_size(layer['size']):>9}  "
                f"{_size(layer['uncompressed_size']):>9}  {layer['files']:>6}  {layer['created_by']}"
            )
            if files:
                for e in layer["entries"]:
                    link = f" -> {e['link']}" if "link" in e else ""
                    lines.append(
                        f"        {_mode_string(e['type'], e['mode'])} {e['uid']}/{e['gid']} "
                        f"{e['size']:>10}  {e['path']}{link}"
                    )
        lines.append("")
    return "\n".join(lines).rstrip("\n")
