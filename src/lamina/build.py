"""lamina build: spec → layers → image → sinks. The only module that sequences the stages."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import attrs

from lamina.errors import OutputError, UsageError
from lamina.image import Image, Settings, compose
from lamina.layers.build import build_layer
from lamina.model import Layer
from lamina.sinks.atomic import check_replaceable_dir, check_replaceable_file
from lamina.sinks.layout import write_layout
from lamina.sinks.metadata import write_metadata
from lamina.sinks.tarball import write_tarball
from lamina.sources.files import tree_layer
from lamina.sources.tarball import read_tarball
from lamina.spec import BuildSpec, FilesLayer, LayerSpec
from lamina.store import BlobStore

Progress = Callable[[str], None]


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


def _build_one(layer: LayerSpec, spec: BuildSpec, store: BlobStore, epoch: int) -> Layer:
    created_by = layer.describe()
    if isinstance(layer, FilesLayer):
        items = tree_layer(layer.adds, workdir=spec.workdir, epoch=epoch)
        return build_layer(items, compression=spec.compression, store=store, created_by=created_by)
    with read_tarball(layer.src, layer.dst, epoch=epoch) as items:
        return build_layer(items, compression=spec.compression, store=store, created_by=created_by)


def settings_of(spec: BuildSpec, epoch: int) -> Settings:
    return Settings(
        platform=spec.platform,
        epoch=epoch,
        entrypoint=spec.entrypoint,
        cmd=spec.cmd,
        env=spec.env,
        workdir=spec.workdir,
        user=spec.user,
        labels=spec.labels,
        annotations=spec.annotations,
        exposed_ports=spec.expose,
        stop_signal=spec.stop_signal,
    )


def build(spec: BuildSpec, *, epoch: int, progress: Progress | None = None) -> BuildResult:
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
    # The blob store sits beside the first output so the layout sink can hardlink blobs.
    work_parent = (spec.oci_dir or spec.output).parent  # type: ignore[union-attr]
    try:
        workdir = tempfile.TemporaryDirectory(dir=work_parent, prefix=".lamina-build-")
    except OSError as exc:
        raise OutputError(f"cannot create a work directory in {str(work_parent)!r}: {exc.strerror}") from exc
    with workdir as tmp:
        store = BlobStore(Path(tmp))
        layers = []
        for layer in spec.layers:
            if progress:
                progress(layer.describe())
            layers.append(_build_one(layer, spec, store, epoch))
        image = compose(layers, settings_of(spec, epoch))
        if spec.oci_dir is not None:
            write_layout(image, store, spec.oci_dir, spec.tags)
        if spec.output is not None:
            write_tarball(image, store, spec.output, spec.tags, epoch=epoch)
        if spec.metadata_file is not None:
            write_metadata(image, spec.tags, spec.metadata_file)
    return BuildResult(image, tuple(outputs))
