"""lamina build: spec → (base) → layers → image → sinks. The only module that sequences stages."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import attrs

from lamina.errors import InputError, OutputError, UsageError
from lamina.layers.entries import Entry, Kind, normalize
from lamina.image import Base, Built, ConfigChanges, Image, compose, compose_index, images_of
from lamina.platforms import for_platform
from lamina.layers.build import Opener, build_layer
from lamina.model import Layer, Platform
from lamina.sinks.atomic import check_replaceable_dir, check_replaceable_file
from lamina.sinks.outputs import STDOUT, WorkDir, emit
from lamina.resolve import Resolver
from lamina.sources.base import DEFAULT_PLATFORM, platform_matches
from lamina.sources.files import CopyFromSpec, LayerContext, removal_layer, tree_layer, tree_stamp
from lamina.sources.packages import Installs, package_items
from lamina.sources.rootfs import MergedFS
from lamina.spec import BuildSpec, DebsLayer, FilesLayer, LayerSpec
from lamina.store import BlobStore

if TYPE_CHECKING:  # the rest is imported where a build uses it (sqlite3 with the cache, ...)
    from lamina.cache import LayerCache
    from lamina.depfile import Inputs
    from lamina.essentials import Essentials
    from lamina.lint import LintImage
    from lamina.layers.origins import LayerLog

Progress = Callable[[str], None]
# A progress bar for one layer: (description, total bytes or None) -> context giving an update(n) function.
Meter = Callable[[str, "int | None"], "contextlib.AbstractContextManager[Callable[[int], None]]"]


@attrs.frozen
class BuildResult:
    image: Built  # one Image, or an ImageIndex of several platforms
    outputs: tuple[Path, ...]
    pushed: str | None = None  # name@sha256:… when pushed
    provenance: bytes | None = None  # the in-toto statement attached, for signing beside the output
    packages: tuple[Any, ...] = ()  # sources.apt.Locked: every Debian package installed, per platform
    up_to_date: bool = False  # nothing was built: the outputs already held this image (lamina.uptodate)


def _check_writable(path: Path) -> None:
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {str(path)!r}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write {str(path)!r}: Permission denied")


def _check_arch(items: Sequence[tuple[Entry, Opener]], platform: Platform) -> None:
    """Every ELF executable added must be for the image's platform (not a mislabelled artifact)."""
    from lamina.elf import mismatch
    from lamina.layers.entries import Kind

    for entry, _ in items:
        if entry.kind is Kind.FILE and entry.source and entry.mode & 0o111 and entry.size >= 20:
            try:
                with open(entry.source, "rb") as f:
                    why = mismatch(f.read(20), platform)
            except OSError as exc:
                raise InputError(f"cannot read {entry.source!r}: {exc.strerror}") from None
            if why:
                raise InputError(f"/{entry.path} (from {entry.source}) is {why}; --no-arch-check allows it")


def _from_cache(cache: LayerCache, key: str, store: BlobStore, created_by: str) -> Layer | None:
    hit = cache.get(key)
    if hit is None:
        return None
    layer, blob = hit
    store.refer(layer.descriptor.digest, blob)  # sinks copy out of the store, never write to it
    return attrs.evolve(layer, created_by=created_by)


def _build_one(layer: LayerSpec, spec: BuildSpec, store: BlobStore, ctx: LayerContext, platform: Platform,
               cache: LayerCache | None, meter: Meter | None = None, record: list[Entry] | None = None,
               note: Progress | None = None, read_base: Callable[[str], bytes | None] = lambda _: None,
               packages: Installs | None = None, log: LayerLog | None = None) -> Layer:
    """Build (or take from the local cache, then the cache repository) one layer; ``record``
    receives its entries, for lint; ``log`` where the layer came from."""
    from lamina.layers.compression import describe
    from lamina.layers.origins import BUILT, LOCAL, LayerLog

    log = log if log is not None else LayerLog()

    def put_local(hit: Layer) -> None:  # a cache-repository hit, downloaded: into the local cache too
        with _cache_errors_ignored():
            assert cache is not None and key is not None
            cache.put(key, hit, store.path(hit.descriptor.digest))

    created_by = layer.describe()
    settings = f"{spec.compression.value}\0{describe(spec.compression)}"
    key = None
    if isinstance(layer, DebsLayer):
        with contextlib.ExitStack() as stack:
            items = package_items(layer.debs, layer.packages, spec.apt, platform, ctx.base, read_base,
                                  ctx.spool, ctx.epoch, stack, note or (lambda _: None), spec.arch_check,
                                  locked=spec.locked_packages, hermetic=spec.hermetic, installs=packages,
                                  allow_overwrite=layer.allow_overwrite)
            if record is not None:
                record.extend(e for e, _ in items)
            with _metered(meter, created_by, sum(e.size for e, _ in items)) as on_bytes:
                debs = build_layer(items, compression=spec.compression, store=store, created_by=created_by, on_bytes=on_bytes)
        log.built(None, debs, BUILT)  # package layers are not cached (resolution decides their inputs)
        return debs
    if isinstance(layer, FilesLayer):
        # Host trees whose stats are as a build of this layer found them: its entries and key
        # as they were then (checked then for this platform), nothing walked into or hashed.
        stamp = tree_stamp(layer.adds, ctx, f"{settings}\0{spec.arch_check}\0{platform}") if cache is not None else None
        memo = None
        if stamp is not None and cache is not None:
            with _cache_errors_ignored():
                memo = cache.tree(stamp.digest)
        if memo is not None:
            key, entries = memo
            items = [(e, None) for e in entries]
        else:
            items = tree_layer(layer.adds, ctx)
            if spec.arch_check:
                _check_arch(items, platform)
        if record is not None:
            record.extend(e for e, _ in items)

        def remember(key: str | None) -> None:
            if stamp is not None and stamp.trusted and memo is None and key is not None and cache is not None:
                with _cache_errors_ignored():
                    cache.remember_tree(stamp.digest, key, (e for e, _ in items))

        # Layers copied out of images are not cached: extracting them is the costly part.
        if cache is not None and not any(isinstance(a, CopyFromSpec) for a in layer.adds):
            with _cache_errors_ignored():
                key = key or cache.key_for_entries(items, settings)
                hit = _from_cache(cache, key, store, created_by)
                if hit is not None:
                    log.built(key, hit, LOCAL)
                    remember(key)
                    return hit
            if key is not None and (hit := log.lookup(key, created_by, store, put_local)) is not None:
                remember(key)
                return hit
        total = sum(e.size for e, _ in items if e.kind is Kind.FILE)
        with _metered(meter, created_by, total) as on_bytes:
            built = build_layer(items, compression=spec.compression, store=store, created_by=created_by, on_bytes=on_bytes)
    else:
        from lamina.sources.tarball import read_tarball

        hit = None
        if cache is not None and os.path.isfile(layer.src):
            with _cache_errors_ignored():
                key = cache.key_for_tarball(layer.src, f"{settings}\0{normalize(layer.dst)}\0{ctx.epoch}")
                hit = _from_cache(cache, key, store, created_by)
                if hit is not None:
                    log.built(key, hit, LOCAL)
            if hit is None and key is not None:
                hit = log.lookup(key, created_by, store, put_local)
            if hit is not None:
                if record is not None:  # lint needs the members (and what it reads): one pass
                    with read_tarball(layer.src, layer.dst, epoch=ctx.epoch) as members:
                        for entry, opener in _recorded(members, record, ctx.spool + "-lint"):
                            if opener is not None and record[-1].source:
                                with opener() as data:
                                    while data.read(1 << 20):
                                        pass
                return hit
        with read_tarball(layer.src, layer.dst, epoch=ctx.epoch) as members, _metered(meter, created_by, None) as on_bytes:
            built = build_layer(_recorded(members, record, ctx.spool + "-lint"), compression=spec.compression,
                                store=store, created_by=created_by, on_bytes=on_bytes)
    if cache is not None and key is not None:
        with _cache_errors_ignored():
            cache.put(key, built, store.path(built.descriptor.digest))
            if isinstance(layer, FilesLayer):
                remember(key)
    log.built(key, built, BUILT)
    return built


def _recorded(items: Iterator[tuple[Entry, Opener]], record: list[Entry] | None,
              keep: str = "") -> Iterator[tuple[Entry, Opener]]:
    """The entries as they stream by, each also appended to ``record`` (for lint). The bytes of
    the members lint will read (lint.reads) are copied into ``keep`` as the layer reads them, and
    the recorded entry points at the copy: lint then needs no second pass over the layer."""
    from lamina.lint import reads

    where = ""
    for entry, opener in items:
        recorded = entry
        if record is not None and keep and opener is not None and entry.kind is Kind.FILE and reads(entry.path, entry.mode):
            if not where:
                os.makedirs(keep, exist_ok=True)
                where = tempfile.mkdtemp(dir=keep)  # one directory per layer read
            copy = os.path.join(where, f"{len(record):08d}")
            opener = functools.partial(_Tee.open, opener, copy)
            recorded = attrs.evolve(entry, source=copy)  # build_layer reads the opener, lint the copy
        if record is not None:
            record.append(recorded)
        yield entry, opener


class _Tee(io.RawIOBase):
    """A member's bytes as the layer reads them, written to a file on the side."""

    def __init__(self, inner: BinaryIO, copy: BinaryIO) -> None:
        self._inner, self._copy = inner, copy

    @classmethod
    def open(cls, opener: Callable[[], BinaryIO], path: str) -> BinaryIO:
        return io.BufferedReader(cls(opener(), open(path, "wb")), 1 << 20)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        self._copy.write(data)
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._copy.close()
            self._inner.close()
        super().close()


@contextlib.contextmanager
def _metered(meter: Meter | None, description: str, total: int | None) -> Any:
    if meter is None:
        yield None
        return
    with meter(description, total) as update:
        yield update


@contextlib.contextmanager
def _cache_errors_ignored() -> Any:
    """The cache only saves time: a locked or broken cache database, or a cache blob that cannot
    be read or linked (a full disk), means building, not failing."""
    import sqlite3  # loaded already: only builds with a cache come here

    try:
        yield
    except (sqlite3.Error, OSError):
        pass


def _import_base(images: Resolver, text: str, spec: BuildSpec, store: BlobStore, note: Progress) -> Base:
    """The base's layers into the store: byte for byte where the output can carry them,
    every one checked against its digest and diff_id as it streams."""
    from lamina.registry.pull import recorded_layer
    from lamina.sources.imported import import_layer

    image = images.image(text)
    blobs = image.blobs
    assert blobs is not None
    layers = tuple(
        import_layer(
            functools.partial(blobs.open, layer.descriptor),
            media_type=layer.descriptor.media_type, digest=layer.descriptor.digest, diff_id=layer.diff_id,
            annotations=layer.descriptor.annotations, compression=spec.compression, store=store,
            created_by=layer.created_by, name=text, note=note, verifies=True,  # Blobs.open verifies
            recorded=recorded_layer,
        )
        for layer in image.layers
    )
    return images.base(text, layers)


def check_outputs(spec: BuildSpec, *, pushing: bool = False) -> list[Path]:
    """The paths a build will write (``-o -`` is standard output, not a path), checked up front."""
    outputs = [p for p in (spec.output, spec.oci_dir, spec.metadata_file, spec.depfile) if p is not None and p != STDOUT]
    resolved = [p.resolve() for p in outputs]
    if len(set(resolved)) != len(resolved):
        raise UsageError("the tarball, --oci-dir, --metadata-file and --depfile must be different paths")
    if spec.output is None and spec.oci_dir is None and not pushing:
        raise UsageError("nothing to write: give -o/--output PATH (a tarball), --oci-dir DIR or --push REF")
    for path in outputs:
        _check_writable(path)
    for file in (spec.output, spec.metadata_file, spec.depfile):
        if file is not None and file != STDOUT:
            check_replaceable_file(file)
    if spec.oci_dir is not None:
        check_replaceable_dir(spec.oci_dir)
    return outputs


@attrs.define
class _Run:
    """What the platforms of one build share: the store, the spool, and layers already built."""

    spec: BuildSpec
    store: BlobStore
    stack: contextlib.ExitStack
    spool: str
    epoch: int
    say: Progress
    note: Progress
    registry: Any = None
    cache: LayerCache | None = None
    meter: Meter | None = None
    essentials: Essentials | None = None  # --ca-certs/--accounts/--tmp/--tzdata: the generated last layer
    config: ConfigChanges = ConfigChanges()
    shuffle: bool = False
    # Called with (lint image, composed image, platform) when linting; None: no lint.
    lint: Callable[[Any, Image, Platform], None] | None = None
    built: dict[tuple[object, ...], tuple[Layer, list[Entry]]] = attrs.field(factory=dict)
    used: list[tuple[str, Image]] = attrs.field(factory=list)  # (name, image) of every image read
    packages: Installs = attrs.field(factory=Installs)  # what the package layers installed
    log: LayerLog | None = None  # where each layer came from; with a cache repository, a CacheRepo
    inputs: Inputs | None = None  # the walk of the host inputs already taken (lamina.uptodate): trees are not walked again

    def image(self, requested: Platform | None) -> Image:
        spec = self.spec
        images = Resolver(self.stack, requested, self.registry, self.note)
        ctx = LayerContext(workdir=spec.config.workdir or "", epoch=self.epoch, open_image=images.filesystem,
                           spool=self.spool, shuffle=self.shuffle,
                           walked=self.inputs)
        platform = requested or DEFAULT_PLATFORM
        base, base_key = None, None
        if spec.base is not None and spec.base.image != "scratch":
            self.say(f"lamina: base {spec.base.image}")
            base = _import_base(images, spec.base.image, spec, self.store, self.note)
            stored = images.image(spec.base.image)
            platform = requested or stored.platform
            images.platform = platform  # --copy-from images follow the base's platform
            base_key = str(stored.config_descriptor.digest)
            ctx.below = base_key
            if spec.layers or spec.remove:
                ctx.base = images.filesystem(spec.base.image)[0]
        if (self.lint is not None or self.essentials is not None) and base is not None and ctx.base is None:
            ctx.base = images.filesystem(spec.base.image)[0]  # type: ignore[union-attr]
        layers: list[Layer] = []
        recorded: list[list[Entry]] = []
        if spec.remove:
            items = removal_layer(spec.remove, ctx)
            recorded.append([e for e, _ in items])
            layers.append(build_layer(items, compression=spec.compression, store=self.store,
                                      created_by=f"lamina: remove {', '.join(spec.remove)}"))
        read_base = self._base_reader(ctx, images, spec)

        def add(layer: LayerSpec, key: tuple[object, ...], ctx: LayerContext) -> None:
            if key not in self.built:  # same inputs on the same image below: built once, shared by platforms
                self.say(layer.describe())
                entries: list[Entry] = []
                self.built[key] = (_build_one(layer, spec, self.store, ctx, platform, self.cache, self.meter, entries,
                                              note=self.note, read_base=read_base, packages=self.packages,
                                              log=self.log), entries)
            layers.append(self.built[key][0])
            recorded.append(self.built[key][1])

        if base is not None and self.log is not None:
            for base_layer in base.layers:
                self.log.sources.setdefault(base_layer.descriptor.digest, "base")
        for layer in (for_platform(l, platform) for l in spec.layers):
            # Packages resolve per architecture: their layer is never shared between platforms.
            add(layer, (layer, base_key, platform if isinstance(layer, DebsLayer) else None), ctx)
        if self.essentials is not None:  # last: it amends what the image below has (/etc/passwd, the CA bundle, /tmp)
            below = self._lint_image(ctx, images, spec, layers, recorded)
            from lamina.essentials import materialize

            adds = materialize(self.essentials, spec.config, below, Path(self.spool).parent / "essentials")
            if adds:
                essentials = FilesLayer(tuple(adds), label="essentials")
                add(essentials, (essentials, base_key, *(l.diff_id for l in layers)), attrs.evolve(ctx, base=below.fs, below=None))
        image = compose(layers, self.config, platform=platform, epoch=self.epoch, base=base, blobs=self.store)
        self.used.extend(images.opened().items())
        merged = self._lint_image(ctx, images, spec, layers, recorded)  # checks every new layer, lint or not
        if self.lint is not None:
            self.lint(merged, image, platform)
        return image

    def _lint_image(self, ctx: LayerContext, images: Resolver, spec: BuildSpec, layers: list[Layer],
                    recorded: list[list[Entry]]) -> LintImage:
        """The image so far in lint's model (lint.LintImage, as ``lamina lint`` reads a finished
        image): the base's filesystem, then the entries just written to each layer; the bytes of
        files added from the host are read there, the rest extracted from the layers on demand.
        Each entry first passes rootfs.MergedFS.check against the tree below it: what consumers
        would extract differently (through a symlink, under a file, too long) is refused."""
        from lamina.lint import LintImage

        fs = ctx.base.copy("image") if ctx.base is not None else MergedFS("image")
        openers = images.openers(spec.base.image) if ctx.base is not None and spec.base is not None else []
        host: dict[tuple[int, str], str] = {}
        spool, file, hardlink = self.spool + os.sep, Kind.FILE, Kind.HARDLINK
        for index, (layer, entries) in enumerate(zip(layers, recorded), start=len(openers)):
            openers.append(self._blob(layer))
            what = layer.created_by.removeprefix("lamina: ")
            for entry in entries:
                fs.check(entry, what)
                data = (index, entry.path) if entry.kind is file else None  # a file's tar name is its path
                if entry.kind is hardlink:  # as MergedFS reads a hardlink member: the target's file
                    target = fs.get(normalize(entry.linkname))
                    if target is not None and target.data is not None:
                        entry, data = attrs.evolve(entry, kind=Kind.FILE, size=target.entry.size, linkname=""), target.data
                elif data is not None and entry.source and not entry.source.startswith(spool):
                    host[data] = entry.source  # not --copy-from's spool files: a later extraction may reuse their names
                fs.apply(index, entry, data)
            fs.layers = index + 1
        return LintImage(fs, openers, self.spool, host)

    def _base_reader(self, ctx: LayerContext, images: Resolver, spec: BuildSpec) -> Callable[[str], bytes | None]:
        """Small files of the base (its dpkg status), read through lint's model of the base image:
        the first read extracts every status file in one pass over the base's layers."""
        if ctx.base is None or spec.base is None:
            return lambda _: None
        from lamina.lint import LintImage
        from lamina.sources.dpkg import is_status

        image = LintImage(ctx.base, images.openers(spec.base.image), self.spool)
        pending = [p for p in ctx.base.nodes if is_status(p)]

        def read(path: str) -> bytes | None:
            if pending:
                image.fetch_paths(pending)
                pending.clear()
            return image.read(path)

        return read

    def _blob(self, layer: Layer) -> Callable[[], BinaryIO]:
        path = self.store.path(layer.descriptor.digest)
        fetch = self.log.fetch_missing(self.store) if self.log is not None else None

        def open_blob() -> BinaryIO:
            if fetch is not None:  # a cache-repository hit not downloaded: only if lint needs its bytes
                fetch(layer.descriptor.digest)
            return open(path, "rb")
        return open_blob


def _open_cache(note: Progress) -> LayerCache | None:
    """The cache is an optimisation: if it cannot be opened, build without it and say so."""
    import sqlite3

    from lamina.cache import LayerCache

    try:
        return LayerCache(note=note)
    except (OSError, sqlite3.Error) as exc:
        note(f"layer cache unavailable ({exc}); building without it")
        return None


def _sboms(spec: BuildSpec, images: list[Image], epoch: int,
           debs: tuple[Any, ...] = ()) -> tuple[list[tuple[Path, bytes]], list[Any]]:
    """SPDX documents (path beside the output, bytes) and, with --sbom-attach, their artifacts."""
    if spec.sbom is None:
        return [], []
    from lamina import sbom
    from lamina.sources.archive import layer_openers

    target = spec.output or spec.oci_dir
    files, extras = [], []
    for image in images:
        name = str(spec.tags[0]) if spec.tags else str(image.digest)
        doc = sbom.document(image, name, layer_openers(image), epoch, tuple(d for d in debs if d.platform == str(image.platform)))
        suffix = "" if len(images) == 1 else "." + str(image.platform).replace("/", "-")
        if target is not None:
            files.append((target.with_name(f"{target.name}{suffix}.spdx.json"), doc))
        if spec.sbom_attach:
            extras.append(sbom.artifact(image, doc))
    return files, extras


def _provenance(spec: BuildSpec, built: Built, run: _Run, invocation: Any) -> bytes:
    """The SLSA provenance statement about the image (lamina.provenance)."""
    from lamina import provenance

    keys = {spec.base.image: spec.base.key} if spec.base is not None else {}
    keys.update({a.image: a.key for layer in spec.layers if isinstance(layer, FilesLayer)
                 for a in layer.adds if isinstance(a, CopyFromSpec)})
    used = [provenance.UsedImage(keys.get(text) or text, image) for text, image in run.used]
    return provenance.statement(built, spec, run.epoch, invocation or provenance.Invocation(), used)


def docker_image_of(images: list[Image], wanted: Platform | None) -> Image:
    if wanted is None:
        return images[0]
    for image in images:
        if platform_matches(image.platform, wanted):
            return image
    raise UsageError(f"--docker-platform {wanted} is not one of the platforms built "
                     f"({', '.join(str(i.platform) for i in images)})")


def build(spec: BuildSpec, *, epoch: int, progress: Progress | None = None, note: Progress | None = None,
          lock: dict[str, str] | None = None, push: Callable[[Any], Any] | None = None,
          registry: Any = None, use_cache: bool = True, meter: Meter | None = None,
          lint: Callable[[list[Any]], None] | None = None, lint_ignore: tuple[str, ...] = (),
          shuffle: bool = False, invocation: Any = None, inputs: Inputs | None = None,
          fingerprint: str | None = None) -> BuildResult:
    """Plan → build → check → emit, each stage taking the finished values of the one before.

    ``lint`` receives every finding before anything is written, and may raise to stop the
    build; ``push`` takes a PushPlan and returns what registry.api.push returns. ``inputs``
    (what the build reads, for --depfile) and ``fingerprint`` (for the metadata file) are
    the caller's when it has them (lamina.uptodate), read from ``spec`` otherwise."""
    say = progress or (lambda _: None)
    outputs = _plan(spec, lock, pushing=push is not None)
    with WorkDir(spec) as tmp, contextlib.ExitStack() as stack:  # beside the first output
        run = _start(spec, Path(tmp), stack, epoch, say, note or say, registry, meter, use_cache, shuffle)
        run.inputs = inputs
        run.log = _layer_log(spec, registry, note or say, run.cache is not None,
                             need_bytes=push is None or bool(spec.output or spec.oci_dir or spec.sbom))
        stack.callback(run.log.close)
        findings: list[tuple[Platform, Any]] = []
        if lint is not None:
            run.lint = _linter(spec, lint_ignore, findings)
        built = _build_images(run)
        if lint is not None:
            lint(findings)  # check: errors stop here, before any output exists
        pushed, statement = _emit(run, built, invocation, push, inputs, fingerprint)
    return BuildResult(built, tuple(outputs), pushed, statement, tuple(run.packages.packages))


def _plan(spec: BuildSpec, lock: dict[str, str] | None, *, pushing: bool) -> list[Path]:
    """What is checked before any work: the outputs can be written, the inputs are pinned."""
    outputs = check_outputs(spec, pushing=pushing)
    if spec.hermetic:
        from lamina.pins import verify

        verify(spec, lock or {})
    return outputs


def _start(spec: BuildSpec, tmp: Path, stack: contextlib.ExitStack, epoch: int, say: Progress, note: Progress,
           registry: Any, meter: Meter | None, use_cache: bool, shuffle: bool) -> _Run:
    spool = tmp / "spool"
    spool.mkdir()
    cache = _open_cache(note) if use_cache else None
    if cache is not None:
        stack.callback(cache.close)
    run = _Run(spec, BlobStore(tmp), stack, str(spool), epoch, say, note, registry, cache, meter)
    run.config = spec.config
    run.shuffle = shuffle
    if spec.essentials.wanted:
        from lamina.essentials import configure

        run.config = configure(spec.essentials, spec.config)
        run.essentials = spec.essentials
    return run


def _linter(spec: BuildSpec, ignore: tuple[str, ...], findings: list[tuple[Platform, Any]]
            ) -> Callable[[Any, Image, Platform], None]:
    """What lints each platform's image as it is built, collecting (platform, finding)."""
    from lamina.lint import lint as run_lint

    ignored = (*ignore, *(() if spec.arch_check else ("L009",)))  # --no-arch-check covers L009

    def check(lint_image: Any, image: Image, platform: Platform) -> None:
        findings.extend((platform, finding) for finding in run_lint(lint_image, image.config.config, platform, ignored))

    return check


def _build_images(run: _Run) -> Built:
    """Every requested platform's image (layers built once, shared), one index for several."""
    requested: tuple[Platform | None, ...] = run.spec.platforms or (None,)
    images = []
    for platform in requested:
        try:
            images.append(run.image(platform))
        except InputError as exc:
            if len(requested) > 1:
                raise InputError(f"platform {platform}: {exc}") from exc
            raise
    return images[0] if len(images) == 1 else compose_index(images)


def _emit(run: _Run, built: Built, invocation: Any, push: Callable[[Any], Any] | None,
          inputs: Inputs | None = None, fingerprint: str | None = None) -> tuple[str | None, bytes | None]:
    """The attachments (SBOM, provenance), then every output staged and committed, and the push."""
    spec, images = run.spec, list(images_of(built))
    sboms, extras = _sboms(attrs.evolve(spec, output=None) if spec.output == STDOUT else spec, images, run.epoch,
                           tuple(run.packages.packages))
    statement = _provenance(spec, built, run, invocation) if spec.provenance else None
    if statement is not None:
        from lamina.provenance import artifact

        extras.append(artifact(built, statement))
    docker_image = docker_image_of(images, spec.docker_platform) if spec.output is not None else None
    depfile = None
    if spec.depfile is not None:
        from lamina.depfile import inputs as read_inputs, make_rule

        inputs = inputs or read_inputs(spec)  # after the build: any input it could not read, it has named
        targets = [p for p in (spec.output, spec.oci_dir, spec.metadata_file) if p is not None and p != STDOUT]
        depfile = (spec.depfile, make_rule(targets, inputs))
    log = run.log
    assert log is not None  # build() gives every run one
    publish = None
    if push is not None:
        from lamina.registry.plans import publish as push_plans

        publish = functools.partial(push_plans, log.wrap_push(push, run.store))
    pushed = emit(spec, built, epoch=run.epoch, docker_image=docker_image, sboms=sboms, extras=extras,
                  push=publish, sources=log.sources,
                  depfile=depfile, fingerprint=fingerprint)
    log.publish(run.store, pushed)  # only now that the build has succeeded
    if (summary := log.summary()) is not None:
        run.note(summary)
    return pushed, statement


def _layer_log(spec: BuildSpec, registry: Any, note: Progress, cached: bool, *, need_bytes: bool) -> LayerLog:
    """Where layers come from: with ``spec.cache_repo`` (and the local cache, whose keys it shares),
    a CacheRepo that looks keys up in the registry and publishes what this build made."""
    from lamina.layers.origins import LayerLog

    if not spec.cache_repo or not cached:
        return LayerLog()
    from lamina.registry.cache_repo import CacheRepo

    if registry is None:
        from lamina.registry.options import Options

        registry = Options()
    return CacheRepo(target=spec.cache_repo, options=registry, compression=spec.compression,
                     readonly=spec.cache_repo_readonly, note=note, need_bytes=need_bytes)


def resolve_packages(spec: BuildSpec, registry: Any = None) -> list[Any]:
    """What every --package request resolves to (sources.apt.Locked, per platform, on the base),
    found by building the image into a temporary directory: what lamina.lock records is what
    the build installs."""
    if not any(isinstance(layer, DebsLayer) and layer.packages for layer in spec.layers):
        return []
    with tempfile.TemporaryDirectory(prefix="lamina-lock-") as tmp:
        fresh = attrs.evolve(spec, output=None, metadata_file=None, oci_dir=Path(tmp) / "image", sbom=None,
                             sbom_attach=False, hermetic=False, locked_packages=(), tags=())
        result = build(fresh, epoch=0, use_cache=False, registry=registry)
    return [p for p in result.packages if p.request]


def check_reproducible(spec: BuildSpec, *, epoch: int, registry: Any = None) -> list[str]:
    """Build twice — the second time cold (no cache) and walking directories in random order —
    and return the differences (empty: reproducible)."""
    from lamina.diff import diff_refs

    parent = (spec.oci_dir or spec.output or Path(tempfile.gettempdir()) / "x").parent
    with tempfile.TemporaryDirectory(dir=parent, prefix=".lamina-check-") as tmp:
        runs = []
        for name, cold in (("first", False), ("second", True)):
            one = attrs.evolve(spec, output=None, metadata_file=None, oci_dir=Path(tmp) / name)
            runs.append(build(one, epoch=epoch, registry=registry, use_cache=not cold, shuffle=cold).image)
        if runs[0].digest == runs[1].digest:
            return []
        diff = diff_refs(f"oci:{Path(tmp) / 'first'}", f"oci:{Path(tmp) / 'second'}")
        return [f"digest {runs[0].digest} -> {runs[1].digest}", *diff]
