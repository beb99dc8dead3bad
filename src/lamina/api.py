"""lamina's Python API: what the CLI calls, for build tools that would rather not shell out.

    from pathlib import Path
    from lamina import build_image, open_image, read_spec

    result = build_image(read_spec(Path("lamina.toml")), spec_path=Path("lamina.toml"))
    print(result.image.digest, [str(p) for p in result.outputs])
    with open_image("oci:out/layout") as image:
        print(image.platform, [str(layer.diff_id) for layer in image.layers])

Everything here takes and returns lamina's own values (``BuildSpec``, ``Image``,
``BuildResult``); errors are ``lamina.errors.LaminaError`` subclasses whose message is
written for people, as the CLI prints them. Callbacks carry what a person should read.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from lamina.errors import LaminaError, UsageError
from lamina.model import Digest, Platform, Reference
from lamina.spec import BuildSpec, epoch_from_env

if TYPE_CHECKING:  # each function imports what it runs: `up_to_date` needs none of the build
    from lamina import uptodate
    from lamina.build import BuildResult
    from lamina.image import Image

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def build_image(spec: BuildSpec, *, spec_path: Path | None = None, epoch: int | None = None,
                push: str | None = None, registry: Any = None, use_cache: bool = True,
                reproducible_check: bool = False, progress: Say = _quiet, note: Say = _quiet,
                report: Say = _quiet, meter: Any = None, invocation: Any = None,
                sign_gpg_key: str | None = None, lookaside: str | None = None,
                attest_key: Any = None, force: bool = False, command: uptodate.Command | None = None) -> BuildResult:
    """Build ``spec``: lint it, write its outputs, push it when ``push`` names a reference.

    ``epoch``: the build's time (default: the spec's, else $SOURCE_DATE_EPOCH, else 0).
    Lint findings are summarised through ``report`` before anything is written; errors
    among them raise LintError. ``sign_gpg_key``/``lookaside`` sign what was pushed (simple
    signing); ``attest_key`` signs the provenance statement (DSSE), beside the outputs and pushed.
    Outputs already up to date (lamina.uptodate) are left as they are, unless ``force``;
    the result then says ``up_to_date`` and its image is read from the outputs.
    ``command``: the CLI command line this build runs for (lamina.quickcheck remembers it).
    """
    from lamina.build import BuildResult, build, check_reproducible
    from lamina.lint import check_findings

    spec, spec_path, epoch = _arguments(spec, spec_path, epoch)
    if push is not None:
        Reference.parse(push)  # a bad reference is a usage error before anything is built
    if sign_gpg_key and (not push or not lookaside):
        raise UsageError("--sign-gpg-key signs what is pushed: it needs --push REF and --lookaside DIR")
    if epoch is None:
        epoch = spec.source_date_epoch if spec.source_date_epoch is not None else epoch_from_env(os.environ)
    lock: dict[str, str] = {}
    if spec_path is not None:  # lamina.lock lies beside a spec file; flags alone have none
        from lamina.pins import read_lock, read_locked_packages

        lock = read_lock(spec_path)
        if not spec.locked_packages:  # Debian packages lamina.lock pins: fetched as locked, never re-resolved
            spec = attrs.evolve(spec, locked_packages=read_locked_packages(spec_path))
    if reproducible_check:
        differences = check_reproducible(spec, epoch=epoch, registry=registry)
        if differences:
            for line in differences:
                report(line)
            raise LaminaError("not reproducible: two builds of the same inputs differ (above)")
    trackable = _trackable(spec, push=push, use_cache=use_cache, reproducible_check=reproducible_check,
                           attest_key=attest_key)
    if trackable:
        from lamina import uptodate

        if not force and uptodate.check(spec, spec_path, epoch, command) is not None:
            return BuildResult(_read_outputs(spec, registry), tuple(uptodate.outputs(spec)), up_to_date=True)
    pusher = _pusher(push, registry)
    fp = _fingerprint(spec, spec_path, epoch, note) if trackable else None
    inputs = fp.inputs if fp is not None else _inputs(spec, spec_path)
    result = build(spec, epoch=epoch, progress=progress, note=note, lock=lock, push=pusher,
                   registry=registry, use_cache=use_cache, meter=meter,
                   lint=(lambda found: check_findings(found, report)) if spec.lint else None,
                   lint_ignore=spec.lint_ignore, invocation=invocation, inputs=inputs,
                   fingerprint=fp.digest if fp is not None else None)
    if fp is not None:  # trackable: uptodate is imported
        uptodate.record(spec, fp, str(result.image.digest), command)
    if attest_key is not None and result.provenance is not None:
        _attest(result, attest_key, spec, push, registry, note)
    if sign_gpg_key and push and lookaside and result.pushed:
        from lamina.sign import simple
        from lamina.sign.target import Target

        signed = Target(Reference.parse(push), Digest.parse(result.pushed.split("@", 1)[1]))
        note(f"wrote {simple.sign(signed, sign_gpg_key, simple.lookaside_dir(lookaside))}")
    return result


def _arguments(spec: Any, spec_path: Any, epoch: Any) -> tuple[BuildSpec, Path | None, int | None]:
    """The API's arguments as a build takes them (a path given as a string made a Path), or a
    UsageError that names the wrong one: a caller's mistake is one of lamina's errors, never
    an AttributeError from deep inside the build."""
    from lamina.spec import parse_epoch

    if not isinstance(spec, BuildSpec):
        raise UsageError(f"build_image needs a lamina.BuildSpec, not {type(spec).__name__}")
    for field in ("output", "oci_dir", "metadata_file", "depfile"):
        value = getattr(spec, field)
        if isinstance(value, str):
            changes: dict[str, Any] = {field: Path(value)}
            spec = attrs.evolve(spec, **changes)
        elif value is not None and not isinstance(value, Path):
            raise UsageError(f"BuildSpec.{field} must be a path, not {type(value).__name__}")
        if value is not None and "\0" in str(value):
            raise UsageError(f"BuildSpec.{field}: a path cannot hold a NUL byte")
    if isinstance(spec_path, str):
        spec_path = Path(spec_path)
    if spec_path is not None and not isinstance(spec_path, Path):
        raise UsageError(f"spec_path must be a path, not {type(spec_path).__name__}")
    if spec_path is not None and not spec_path.is_file():
        raise UsageError(f"spec_path {str(spec_path)!r} is not a file")
    for what, value in (("epoch", epoch), ("BuildSpec.source_date_epoch", spec.source_date_epoch)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise UsageError(f"{what} must be a whole number of seconds, not {value!r}")
        if value is not None:
            parse_epoch(value, what)  # the range every output's timestamps can hold
    return spec, spec_path, epoch


def _trackable(spec: BuildSpec, *, push: str | None, use_cache: bool, reproducible_check: bool,
               attest_key: Any) -> bool:
    """Whether the outputs alone are the build's effect (no push, no signature, no cache
    refused), so that outputs up to date mean nothing to do. Not with provenance: its
    statement records the command line, which the fingerprint (the spec's) does not cover."""
    return (use_cache and push is None and not reproducible_check and attest_key is None and not spec.provenance
            and spec.output != Path("-") and (spec.output is not None or spec.oci_dir is not None))


def up_to_date(spec: BuildSpec, *, spec_path: Path | None = None, epoch: int | None = None,
               command: uptodate.Command | None = None) -> str | None:
    """The digest ``spec``'s outputs hold when a build would change nothing (their mtimes are
    then refreshed, for Make), else None. Nothing else is read or written."""
    spec, spec_path, epoch = _arguments(spec, spec_path, epoch)
    if epoch is None:
        epoch = spec.source_date_epoch if spec.source_date_epoch is not None else epoch_from_env(os.environ)
    if not _trackable(spec, push=None, use_cache=True, reproducible_check=False, attest_key=None):
        return None
    from lamina import uptodate

    return uptodate.check(spec, spec_path, epoch, command)


def _fingerprint(spec: BuildSpec, spec_path: Path | None, epoch: int, note: Say) -> uptodate.Fingerprint | None:
    """The inputs' fingerprint, hashed through the layer cache's content digests (remembered
    by stat), so that the fingerprint and the layers read each input once between them."""
    from lamina import uptodate
    from lamina.build import _cache_errors_ignored, _open_cache

    cache = _open_cache(note)
    try:
        if cache is None:
            return uptodate.tracked(spec, spec_path, epoch)
        with _cache_errors_ignored():  # a locked or broken cache: the build is not tracked, and goes on
            with cache.batch():  # one transaction for every digest remembered
                return uptodate.tracked(spec, spec_path, epoch, cache.file_digest, cache.hash_ahead)
        return None
    except LaminaError:
        return None  # an input is missing or unreadable: the build says so, in its own words
    finally:
        if cache is not None:
            cache.close()


def _inputs(spec: BuildSpec, spec_path: Path | None) -> Any:
    """What the build reads, for --depfile; None (the build reads them itself, after it has
    said what is wrong with them) when they cannot be read now."""
    if spec.depfile is None:
        return None
    from lamina.depfile import inputs as read_inputs

    try:
        return read_inputs(spec, spec_path)
    except LaminaError:
        return None


def _read_outputs(spec: BuildSpec, registry: Any) -> Any:
    """The image an up-to-date build wrote, read back from its outputs (metadata only)."""
    from lamina.join import join
    from lamina.resolve import Resolver

    name = f"oci:{spec.oci_dir}" if spec.oci_dir is not None else str(spec.output)
    with contextlib.ExitStack() as stack:
        resolver = Resolver(stack, None, registry)
        if len(spec.platforms) > 1:
            return join(resolver, [name], check_elf=False)
        return resolver.image(name)


def _attest(result: BuildResult, key: Any, spec: BuildSpec, push: str | None, options: Any, note: Say) -> None:
    """The provenance in a DSSE envelope signed by ``key``: beside the outputs, and pushed."""
    from lamina.sign import dsse
    from lamina.sign.target import Target
    from lamina.sinks.atomic import atomic_file

    assert result.provenance is not None
    envelope = dsse.envelope(result.provenance, key)
    written = []
    for output in (spec.output, spec.oci_dir):
        if output is not None and str(output) != "-":
            with atomic_file(dsse.beside(output)) as out:
                out.write(envelope)
            written.append(str(dsse.beside(output)))
    if push and result.pushed:
        target = Target(Reference.parse(push), Digest.parse(result.pushed.split("@", 1)[1]))
        written.append(dsse.push(target, envelope, options))
    note(f"signed provenance: {', '.join(written)}")


def lint_spec(path: Path, ignore: tuple[str, ...] = ()) -> list[Any]:
    """Lint what ``path`` (a lamina.toml) would build, built in a temporary directory: the
    (platform, finding) pairs, nothing written anywhere else."""
    from lamina.build import build
    from lamina.spec import read_spec

    spec = read_spec(path)
    epoch = spec.source_date_epoch if spec.source_date_epoch is not None else epoch_from_env(os.environ)
    found: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="lamina-lint-") as tmp:
        spec = attrs.evolve(spec, output=None, metadata_file=None, oci_dir=Path(tmp) / "image", sbom=None,
                            provenance=False)
        build(spec, epoch=epoch, lint=found.extend, lint_ignore=ignore + spec.lint_ignore)
    return found


def push_image(path: Path, reference: str, registry: Any = None, metadata_file: Path | None = None) -> Any:
    """Push a stored image (a lamina tarball or OCI layout, every platform) to ``reference``;
    returns registry.push.Pushed (the reference with its digest, and what was sent)."""
    from lamina.registry import api as registry_api
    from lamina.registry.options import Options
    from lamina.registry.plans import from_archive
    from lamina.sinks.metadata import write_pushed
    from lamina.sources.archive import ImageSource

    Reference.parse(reference)
    with ImageSource.open(path) as source:
        pushed = registry_api.push(from_archive(source), reference, registry or Options())
    if metadata_file is not None:
        write_pushed(metadata_file, pushed.reference)
    return pushed


def index_images(names: list[str], *, output: Path | None = None, oci_dir: Path | None = None,
                 tags: tuple[Reference, ...] = (), push: str | None = None, docker_platform: Platform | None = None,
                 metadata_file: Path | None = None, registry: Any = None, epoch: int | None = None,
                 check_elf: bool = True) -> BuildResult:
    """Join the named images (tarballs, layouts, registry references; single- or multi-platform)
    into one index, written and pushed as a build's outputs are."""
    from lamina.build import BuildResult, check_outputs, docker_image_of
    from lamina.join import join
    from lamina.resolve import Resolver
    from lamina.sinks.outputs import WorkDir, emit
    from lamina.store import BlobStore

    spec = BuildSpec(tags=tags, output=output, oci_dir=oci_dir, docker_platform=docker_platform,
                     metadata_file=metadata_file)
    outputs = tuple(check_outputs(spec, pushing=push is not None))
    for out in (output, metadata_file):  # an input replaced by the join is a slip, never wanted
        for name in names:
            with contextlib.suppress(OSError, ValueError):
                if out is not None and os.path.samefile(out, name):
                    raise UsageError(f"{str(out)!r} is both an input and an output; write the index elsewhere")
    if epoch is None:
        epoch = epoch_from_env(os.environ)
    pusher = _pusher(push, registry)
    push_plan = None
    if pusher is not None:  # the HTTP stack (~20 ms of imports) only for a join that pushes
        from lamina.registry.plans import publish

        push_plan = functools.partial(publish, pusher)
    with WorkDir(spec) as tmp, contextlib.ExitStack() as stack:  # beside the first output, as a build's
        built = join(Resolver(stack, None, registry), names, check_elf=check_elf, store=BlobStore(Path(tmp)))
        docker_image = docker_image_of(list(built.images), docker_platform)
        pushed = emit(spec, built, epoch=epoch, docker_image=docker_image if output is not None else None,
                      sboms=(), extras=(), push=push_plan)
    return BuildResult(built, outputs, pushed)


def _pusher(push: str | None, registry: Any) -> Callable[..., Any] | None:
    """What sends a push plan to ``push`` (a tag; attached artifacts by digest), or None."""
    if push is None:
        return None
    from lamina.registry import api as registry_api
    from lamina.registry.options import Options

    Reference.parse(push)
    options = registry or Options()

    def pusher(plan: Any, digest: Any = None) -> Any:
        target = push if digest is None else f"{Reference.parse(push).name}@{digest}"
        return registry_api.push(plan, target, options)

    return pusher


@contextlib.contextmanager
def open_image(name: str, *, platform: Platform | None = None, registry: Any = None) -> Iterator[Image]:
    """The image ``name`` names (as ``--from`` takes it), open until the block ends."""
    from lamina.resolve import Resolver

    if isinstance(name, Path):
        name = str(name)
    if not isinstance(name, str) or not name or "\0" in name:
        raise UsageError(f"open_image needs an image name or path (as --from takes it), not {name!r:.80}")
    with contextlib.ExitStack() as stack:
        yield Resolver(stack, platform, registry).image(name)


def __getattr__(name: str) -> Any:
    """``lamina.api.BuildResult``, imported with the build only when it is asked for."""
    if name == "BuildResult":
        from lamina.build import BuildResult

        return BuildResult
    raise AttributeError(f"module 'lamina.api' has no attribute {name!r}")


__all__ = ["BuildResult", "BuildSpec", "build_image", "index_images", "lint_spec", "open_image", "push_image",
           "up_to_date"]
