"""lamina build: spec → (base) → layers → image → sinks. The only module that sequences stages."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import attrs

from lamina.errors import OutputError, UsageError
from lamina.image import Base, Image, compose
from lamina.layers.build import build_layer
from lamina.layers.imported import import_layer
from lamina.model import Layer, Platform
from lamina.sinks.atomic import check_replaceable_dir, check_replaceable_file
from lamina.sinks.layout import write_layout
from lamina.sinks.metadata import write_metadata
from lamina.sinks.tarball import write_tarball
from lamina.sources.archive import ImageSource, StoredImage, open_layer
from lamina.sources.base import BaseRef, open_image
from lamina.sources.files import LayerContext, removal_layer, tree_layer
from lamina.sources.rootfs import MergedFS
from lamina.sources.tarball import read_tarball
from lamina.spec import BuildSpec, FilesLayer, LayerSpec
from lamina.store import BlobStore

Progress = Callable[[str], None]
DEFAULT_PLATFORM = Platform("linux", "amd64")


@attrs.frozen
class BuildResult:
    image: Image
    outputs: tuple[Path, ...]


def epoch_from_env(environ: dict[str, str] | os._Environ[str]) -> int:
    """The one place time enters a build: SOURCE_DATE_EPOCH, else 0 (never the wall clock)."""
    from lamina.spec import parse_epoch

    raw = environ.get("SOURCE_DATE_EPOCH", "")
    return parse_epoch(raw, "SOURCE_DATE_EPOCH") if raw.strip() else 0


def _check_writable(path: Path) -> None:
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {str(path)!r}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write {str(path)!r}: Permission denied")


class _Images:
    """Opened image archives (base and --copy-from), each opened and indexed once per build."""

    def __init__(self, stack: contextlib.ExitStack, platform: Platform | None) -> None:
        self._stack = stack
        self.platform = platform
        self._open: dict[str, tuple[ImageSource, StoredImage]] = {}
        self._fs: dict[str, MergedFS] = {}

    def get(self, text: str) -> tuple[ImageSource, StoredImage]:
        if text not in self._open:
            source, image = open_image(BaseRef.parse(text), self.platform)
            self._stack.callback(source.close)
            self._open[text] = (source, image)
        return self._open[text]

    def openers(self, text: str) -> list[Callable[[], BinaryIO]]:
        source, image = self.get(text)
        return [lambda layer=layer: open_layer(source, layer) for layer in image.layers]

    def filesystem(self, text: str) -> tuple[MergedFS, list[Callable[[], BinaryIO]]]:
        openers = self.openers(text)
        if text not in self._fs:
            self._fs[text] = MergedFS.read(text, openers)
        return self._fs[text], openers


def _build_one(layer: LayerSpec, spec: BuildSpec, store: BlobStore, ctx: LayerContext) -> Layer:
    created_by = layer.describe()
    if isinstance(layer, FilesLayer):
        return build_layer(tree_layer(layer.adds, ctx), compression=spec.compression, store=store, created_by=created_by)
    with read_tarball(layer.src, layer.dst, epoch=ctx.epoch) as items:
        return build_layer(items, compression=spec.compression, store=store, created_by=created_by)


def _import_base(images: _Images, text: str, spec: BuildSpec, store: BlobStore, note: Progress) -> Base:
    source, image = images.get(text)
    history = [h for h in image.config.get("history") or [] if isinstance(h, dict) and not h.get("empty_layer")]
    layers = []
    for i, stored in enumerate(image.layers):
        assert stored.diff_id is not None
        created_by = str(history[i].get("created_by", "")) if i < len(history) else ""
        layers.append(import_layer(
            lambda stored=stored: open_layer(source, stored),
            media_type=stored.media_type, digest=stored.digest, diff_id=stored.diff_id,
            annotations=stored.annotations, compression=spec.compression, store=store,
            created_by=created_by, name=text, note=note,
        ))
    return Base(image.config, tuple(layers))


def _outputs(spec: BuildSpec) -> list[Path]:
    outputs = [p for p in (spec.output, spec.oci_dir, spec.metadata_file) if p is not None]
    if spec.output is None and spec.oci_dir is None:
        raise UsageError("nothing to write: give -o/--output PATH (a tarball) or --oci-dir DIR")
    for path in outputs:
        _check_writable(path)
    for path in (spec.output, spec.metadata_file):
        if path is not None:
            check_replaceable_file(path)
    if spec.oci_dir is not None:
        check_replaceable_dir(spec.oci_dir)
    return outputs


def build(spec: BuildSpec, *, epoch: int, progress: Progress | None = None, note: Progress | None = None,
          lock: dict[str, str] | None = None) -> BuildResult:
    say = progress or (lambda _: None)
    outputs = _outputs(spec)
    if spec.hermetic:
        from lamina.pins import verify

        verify(spec, lock or {})
    # The blob store sits beside the first output so the layout sink can hardlink blobs.
    work_parent = (spec.oci_dir or spec.output).parent  # type: ignore[union-attr]
    try:
        workdir = tempfile.TemporaryDirectory(dir=work_parent, prefix=".lamina-build-")
    except OSError as exc:
        raise OutputError(f"cannot create a work directory in {str(work_parent)!r}: {exc.strerror}") from exc
    with workdir as tmp, contextlib.ExitStack() as stack:
        store = BlobStore(Path(tmp))
        spool = Path(tmp) / "spool"
        spool.mkdir()
        images = _Images(stack, spec.platform)
        base = None
        ctx = LayerContext(workdir=spec.config.workdir or "", epoch=epoch, open_image=images.filesystem, spool=str(spool))
        platform = spec.platform or DEFAULT_PLATFORM
        if spec.base is not None and spec.base.image != "scratch":
            say(f"lamina: base {spec.base.image}")
            base = _import_base(images, spec.base.image, spec, store, note or say)
            platform = spec.platform or images.get(spec.base.image)[1].platform
            images.platform = platform  # --copy-from images follow the base's platform
            if spec.layers or spec.remove:
                ctx.base = images.filesystem(spec.base.image)[0]
        layers = []
        if spec.remove:
            say(f"lamina: remove {', '.join(spec.remove)}")
            items = removal_layer(spec.remove, ctx)
            layers.append(build_layer(items, compression=spec.compression, store=store,
                                      created_by=f"lamina: remove {', '.join(spec.remove)}"))
        for layer in spec.layers:
            say(layer.describe())
            layers.append(_build_one(layer, spec, store, ctx))
        image = compose(layers, spec.config, platform=platform, epoch=epoch, base=base)
        if spec.oci_dir is not None:
            write_layout(image, store, spec.oci_dir, spec.tags)
        if spec.output is not None:
            write_tarball(image, store, spec.output, spec.tags, epoch=epoch)
        if spec.metadata_file is not None:
            write_metadata(image, spec.tags, spec.metadata_file)
    return BuildResult(image, tuple(outputs))
