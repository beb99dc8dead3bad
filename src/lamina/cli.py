"""Click wiring only: parse flags, call the library, turn LaminaErrors into exit codes.

Imports of the library happen inside the commands, so ``lamina --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from lamina.version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lamina")
@click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Build lean, reproducible OCI images from files, without a daemon or a Dockerfile."""
    ctx.obj = {"debug": debug}


def _registry_options(func: Any) -> Any:
    for option in reversed([
        click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]",
                     help="Use plain HTTP for this registry (localhost and 127.0.0.0/8 always do)."),
        click.option("--ca-file", type=click.Path(dir_okay=False), help="Trust this CA bundle for registries too."),
        click.option("--chunk-size", metavar="SIZE", help="Upload blobs in chunks of SIZE (e.g. 16M)."),
    ]):
        func = option(func)
    return func


def _registry(ctx: click.Context, opts: dict[str, Any], quiet: bool = False) -> Any:
    from lamina.registry.options import Options

    def stderr_debug(message: str) -> None:
        click.echo(f"lamina: debug: {message}", err=True)

    def parse_size(text: str) -> int:
        from lamina.registry.api import parse_size as parse

        return parse(text)

    chatty = not quiet and sys.stderr.isatty()
    return Options(
        insecure=tuple(opts.pop("insecure", ())),
        ca_file=opts.pop("ca_file", None),
        chunk_size=parse_size(c) if (c := opts.pop("chunk_size", None)) else None,
        debug=stderr_debug if ctx.obj.get("debug") else None,
        progress=(lambda m: click.echo(f"lamina: {m}", err=True)) if chatty else None,
    )


def _meter(chatty: bool) -> Any:
    """Per-layer progress bars (bytes, rate) on a terminal only; tqdm is imported only then."""
    if not chatty:
        return None
    import contextlib

    from tqdm import tqdm

    @contextlib.contextmanager
    def bar(description: str, total: int | None) -> Any:
        with tqdm(total=total, desc=description[:48], unit="B", unit_scale=True, unit_divisor=1024,
                  leave=False, file=sys.stderr, dynamic_ncols=True) as progress:
            yield progress.update

    return bar


def _lint_ids(values: tuple[str, ...]) -> tuple[str, ...]:
    import re

    from lamina.errors import UsageError

    for value in values:
        if not re.match(r"^L\d{3}$", value):
            raise UsageError(f"bad --ignore {value!r}: expected a finding id like L006")
    return values


def _lint_spec(path: Path, ignore: tuple[str, ...]) -> list[Any]:
    import tempfile

    import attrs

    from lamina.build import build as run_build, epoch_from_env
    from lamina.spec import read_spec

    spec = read_spec(path)
    epoch = spec.source_date_epoch if spec.source_date_epoch is not None else epoch_from_env(os.environ)
    found: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="lamina-lint-") as tmp:
        spec = attrs.evolve(spec, output=None, metadata_file=None, oci_dir=Path(tmp) / "image", sbom=None)
        run_build(spec, epoch=epoch, lint=found.extend, lint_ignore=ignore + spec.lint_ignore)
    return found


def _report_findings(findings: list[Any]) -> None:
    """Print every finding; errors then stop the build before anything is written."""
    from lamina.errors import LintError

    several = len({platform for platform, _ in findings}) > 1
    for platform, finding in findings:
        where = f"{platform}: " if several else ""
        click.echo(f"lamina: {where}{finding.line()}", err=True)
    errors = sum(1 for _, f in findings if f.severity == "error")
    if errors:
        raise LintError(f"lint found {errors} error(s) that would break the image; fix them, --ignore the id, or use --no-lint")


def _pairs(values: tuple[str, ...], flag: str) -> tuple[tuple[str, str], ...]:
    from lamina.spec import parse_pair

    return tuple(parse_pair(v, flag) for v in values)


@main.command()
@click.argument("spec_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--add", "adds", multiple=True, metavar="SRC:DST[:MODE]",
              help="Copy a file or directory into the image (one layer each).")
@click.option("--tarball", "tarballs", multiple=True, metavar="PATH[:DST]",
              help="Add a rootfs tarball (tar, gz, xz, bz2, zstd) as a layer.")
@click.option("--from", "base", metavar="IMAGE",
              help="Base image: scratch, docker-archive:PATH[:REF|@N], oci-archive:PATH[:REF], oci:DIR[:REF], or a path.")
@click.option("--copy-from", "copies", multiple=True, metavar="IMAGE:SRC:DST",
              help="Copy SRC out of another image (COPY --from), one layer each.")
@click.option("--remove", "removes", multiple=True, metavar="PATH", help="Drop PATH of the base image (a whiteout).")
@click.option("--ca-certs", "ca_certs", multiple=True, is_flag=False, flag_value="@system", metavar="[FILE|DIR]",
              help="A CA bundle at /etc/ssl/certs/ca-certificates.crt (alone: this machine's), SSL_CERT_FILE set.")
@click.option("--accounts", is_flag=True, default=None, help="Minimal /etc/passwd, /etc/group (root, nonroot 65532).")
@click.option("--tmp", is_flag=True, default=None, help="A /tmp directory with mode 1777.")
@click.option("--tzdata", is_flag=False, flag_value="@system", default=None, metavar="[DIR]",
              help="Zoneinfo at /usr/share/zoneinfo (alone: this machine's).")
@click.option("--sbom", metavar="spdx", help="Write an SPDX 2.3 SBOM (every file, Go modules) beside the output.")
@click.option("--sbom-attach", is_flag=True, default=None, help="Also attach the SBOM as an OCI artifact (subject: the image).")
@click.option("--no-lint", "lint", flag_value=False, default=None, help="Do not lint the image (lint errors stop a build).")
@click.option("--ignore", "lint_ignore", multiple=True, metavar="L00N", help="Ignore a lint finding id (repeatable).")
@click.option("--hermetic", is_flag=True, default=None, help="Refuse inputs not pinned by sha256 (spec or lamina.lock).")
@click.option("--entrypoint", metavar="JSON|STRING", help='Entrypoint: \'["/hello","-v"]\' or one plain argument.')
@click.option("--cmd", metavar="JSON|STRING", help="Default arguments, as --entrypoint.")
@click.option("--env", "envs", multiple=True, metavar="K=V", help="Environment variable (repeatable).")
@click.option("--workdir", help="Working directory.")
@click.option("--user", help="User (name or uid[:gid]).")
@click.option("--label", "labels", multiple=True, metavar="K=V", help="Config label (repeatable).")
@click.option("--annotation", "annotations", multiple=True, metavar="K=V", help="Manifest annotation (repeatable).")
@click.option("--expose", "exposes", multiple=True, metavar="PORT[/PROTO]", help="Exposed port (repeatable).")
@click.option("--stop-signal", help="Stop signal, e.g. SIGTERM.")
@click.option("--platform", metavar="OS/ARCH[/VARIANT],...",
              help="Platform(s), comma-separated; several make an OCI index (default: the base's, else linux/amd64).")
@click.option("--docker-platform", metavar="OS/ARCH[/VARIANT]",
              help="Which platform the tarball's manifest.json (docker load) describes (default: the first).")
@click.option("--no-arch-check", "arch_check", flag_value=False, default=None,
              help="Allow executables whose ELF machine does not match the platform.")
@click.option("-t", "--tag", "tags", multiple=True, metavar="NAME[:TAG]", help="Image name (repeatable).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the image tarball here.")
@click.option("--oci-dir", type=click.Path(path_type=Path), help="Write an OCI image layout directory here.")
@click.option("--compression", metavar="gzip|zstd|none", help="Layer compression (default gzip).")
@click.option("--source-date-epoch", metavar="N", help="Timestamp for config and files (default $SOURCE_DATE_EPOCH, else 0).")
@click.option("--metadata-file", type=click.Path(path_type=Path), help="Write digests and sizes as JSON here.")
@click.option("--no-cache", is_flag=True, help="Build every layer; do not use or fill the layer cache.")
@click.option("--check-reproducible", is_flag=True,
              help="Build twice (cold cache, shuffled walk) first; fail with the diff if the digests differ.")
@click.option("--push", "push_to", metavar="REF", help="Push the image to a registry (prints REF@sha256:…).")
@_registry_options
@click.option("-q", "--quiet", is_flag=True, help="Print only the manifest digest.")
@click.pass_context
def build(ctx: click.Context, spec_file: Path | None, adds: tuple[str, ...], tarballs: tuple[str, ...], copies: tuple[str, ...],
          removes: tuple[str, ...], **opts: Any) -> None:
    """Build an image from files, flags and/or a lamina.toml spec file.

    Flags override the file. Layers: the base's, then --remove, then the file's, then
    --tarball, --copy-from and --add layers in that order.
    """
    from lamina import spec as specs
    from lamina.build import build as run_build, epoch_from_env
    from lamina.model import Platform

    quiet = opts.pop("quiet")
    no_cache = opts.pop("no_cache")
    check = opts.pop("check_reproducible")
    push_to = opts.pop("push_to")
    registry_options = _registry(ctx, opts, quiet)
    if push_to:
        from lamina.model import Reference

        Reference.parse(push_to)  # a bad reference is a usage error before anything is built
    flags: dict[str, Any] = {
        "layers": [
            *(specs.parse_tarball(t) for t in tarballs),
            *(specs.FilesLayer((specs.parse_copy_from(c),)) for c in copies),
            *(specs.FilesLayer((specs.parse_add(a),)) for a in adds),
        ],
        "base": specs.BaseSpec(opts["base"], key=opts["base"]) if opts["base"] else None,
        "remove": removes,
        "hermetic": opts["hermetic"],
        "lint": opts["lint"],
        "sbom": specs.parse_sbom(opts["sbom"]) if opts["sbom"] else None,
        "sbom_attach": opts["sbom_attach"],
        "lint_ignore": _lint_ids(opts["lint_ignore"]),
        "ca_certs": opts["ca_certs"],
        "accounts": opts["accounts"],
        "tmp": opts["tmp"],
        "tzdata": opts["tzdata"],
        "entrypoint": specs.parse_command(opts["entrypoint"], "--entrypoint") if opts["entrypoint"] is not None else None,
        "cmd": specs.parse_command(opts["cmd"], "--cmd") if opts["cmd"] is not None else None,
        "env": _pairs(opts["envs"], "--env"),
        "labels": _pairs(opts["labels"], "--label"),
        "annotations": _pairs(opts["annotations"], "--annotation"),
        "expose": tuple(specs.parse_port(p) for p in opts["exposes"]),
        "workdir": opts["workdir"],
        "user": opts["user"],
        "stop_signal": opts["stop_signal"],
        "platforms": specs.parse_platforms(opts["platform"]) if opts["platform"] else None,
        "docker_platform": Platform.parse(opts["docker_platform"]) if opts["docker_platform"] else None,
        "arch_check": opts["arch_check"],
        "tags": tuple(specs.parse_tag(t) for t in opts["tags"]),
        "output": opts["output"],
        "oci_dir": opts["oci_dir"],
        "compression": specs.parse_compression(opts["compression"]) if opts["compression"] else None,
        "source_date_epoch": (
            specs.parse_epoch(opts["source_date_epoch"], "--source-date-epoch")
            if opts["source_date_epoch"] is not None else None
        ),
        "metadata_file": opts["metadata_file"],
    }
    if spec_file is None and not (adds or tarballs or copies) and Path(specs.DEFAULT_SPEC).is_file():
        spec_file = Path(specs.DEFAULT_SPEC)
    base = specs.read_spec(spec_file) if spec_file is not None else specs.BuildSpec()
    spec = specs.merge(base, flags)
    epoch = spec.source_date_epoch if spec.source_date_epoch is not None else epoch_from_env(os.environ)

    # Progress is for people at a terminal; CI logs and --quiet get the digest alone.
    chatty = not quiet and sys.stderr.isatty()

    def progress(message: str) -> None:
        if chatty:
            click.echo(message, err=True)

    def note(message: str) -> None:  # things the user must hear about, TTY or not
        if not quiet:
            click.echo(f"lamina: note: {message}", err=True)

    from lamina.pins import read_lock

    if check:
        from lamina.build import check_reproducible
        from lamina.errors import LaminaError

        differences = check_reproducible(spec, epoch=epoch, registry=registry_options)
        if differences:
            for line in differences:
                click.echo(f"lamina: {line}", err=True)
            raise LaminaError("not reproducible: two builds of the same inputs differ (above)")
    pusher = None
    if push_to:
        from lamina.registry import api

        from lamina.model import Reference

        def pusher(plan: Any, digest: Any = None) -> Any:
            target = push_to if digest is None else f"{Reference.parse(push_to).name}@{digest}"
            return api.push(plan, target, registry_options)
    result = run_build(spec, epoch=epoch, progress=progress, note=note, lock=read_lock(spec_file), push=pusher,
                       registry=registry_options, use_cache=not no_cache, meter=_meter(chatty),
                       lint=_report_findings if spec.lint else None, lint_ignore=spec.lint_ignore)
    if chatty:
        for path in result.outputs:
            click.echo(f"wrote {path}", err=True)
    click.echo(result.pushed or str(result.image.digest))


@main.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.argument("reference")
@_registry_options
@click.option("--metadata-file", type=click.Path(path_type=Path), help="Write the pushed reference as JSON here.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the pushed reference.")
@click.pass_context
def push(ctx: click.Context, image: Path, reference: str, metadata_file: Path | None, quiet: bool, **opts: Any) -> None:
    """Push IMAGE (a lamina tarball or OCI layout, every platform) to REFERENCE."""
    import json

    from lamina.model import Reference
    from lamina.registry import api
    from lamina.registry.plans import from_archive
    from lamina.sinks.atomic import atomic_file
    from lamina.sources.archive import ImageSource

    Reference.parse(reference)
    options = _registry(ctx, opts, quiet)
    with ImageSource.open(image) as source:
        pushed = api.push(from_archive(source), reference, options)
    if metadata_file is not None:
        with atomic_file(metadata_file) as out:
            out.write(json.dumps({"pushed": pushed.reference, "digest": pushed.reference.split("@")[1]}, indent=2).encode() + b"\n")
    if not quiet and sys.stderr.isatty():
        s = pushed.stats
        click.echo(f"lamina: {s.uploaded} blobs uploaded ({s.bytes} bytes), {s.mounted} mounted, {s.skipped} already there", err=True)
    click.echo(pushed.reference)


@main.command()
@click.argument("registry")
@click.option("-u", "--username", required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin (the only way: never on the command line).")
@_registry_options
@click.pass_context
def login(ctx: click.Context, registry: str, username: str, password_stdin: bool, **opts: Any) -> None:
    """Check credentials against REGISTRY and store them in $DOCKER_CONFIG/config.json."""
    from lamina.errors import UsageError
    from lamina.registry import api

    if not password_stdin:
        raise UsageError("give the password on stdin with --password-stdin")
    password = sys.stdin.readline().rstrip("\n")
    path = api.login(registry, username, password, _registry(ctx, opts))
    click.echo(f"login succeeded; credentials saved in {path}")


@main.command()
@click.argument("spec_file", required=False, default="lamina.toml", type=click.Path(dir_okay=False, path_type=Path))
def lock(spec_file: Path) -> None:
    """Pin every input of SPEC_FILE by sha256 in a lamina.lock beside it."""
    from lamina.pins import write_lock
    from lamina.spec import read_spec

    path, count = write_lock(read_spec(spec_file), spec_file)
    click.echo(f"wrote {path} ({count} inputs pinned)")


@main.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--files", is_flag=True, help="List every entry of every layer.")
@click.option("--sizes", is_flag=True, help="Per layer: largest files and directories, and bytes wasted.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(image: Path, files: bool, sizes: bool, as_json: bool) -> None:
    """Show an image's config and layers (a lamina/docker tarball or an OCI layout)."""
    import json

    from lamina.inspect import inspect_image, render

    records = inspect_image(image)
    if as_json:
        if not files:
            for rec in records:
                for layer in rec["layers"]:
                    del layer["entries"]
        click.echo(json.dumps(records, indent=2))
    else:
        click.echo(render(records, files=files, sizes=sizes))


@main.command(name="diff")
@click.argument("first")
@click.argument("second")
@click.option("--platform", metavar="OS/ARCH", help="Which platform of multi-platform images (default linux/amd64).")
@_registry_options
@click.pass_context
def diff_command(ctx: click.Context, first: str, second: str, platform: str | None, **opts: Any) -> None:
    """Explain why two images differ: config, then layer by layer, entry by entry."""
    from lamina.diff import diff_refs
    from lamina.model import Platform

    lines = diff_refs(first, second, Platform.parse(platform) if platform else None, _registry(ctx, opts))
    for line in lines:
        click.echo(line)
    if lines:
        ctx.exit(1)


@main.command(name="lint")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--ignore", "ignore", multiple=True, metavar="L00N", help="Ignore a finding id (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Findings as JSON.")
def lint_command(image: Path, ignore: tuple[str, ...], as_json: bool) -> None:
    """Check an image for what breaks on a minimal image: a finished image (tarball or
    layout), or a spec file (built in a temporary directory, nothing written)."""
    import json

    from lamina.errors import LintError
    from lamina.lint import lint_stored

    if image.suffix == ".toml":
        findings = _lint_spec(image, _lint_ids(ignore))
    else:
        findings = lint_stored(str(image), _lint_ids(ignore))
    if as_json:
        click.echo(json.dumps([{"platform": str(p), **f.to_json()} for p, f in findings], indent=2))
    else:
        for platform, finding in findings:
            click.echo(f"{platform}: {finding.line()}")
    errors = sum(1 for _, f in findings if f.severity == "error")
    if errors:
        raise LintError(f"{errors} lint error(s) in {image}")


@main.group()
def cache() -> None:
    """The layer cache under $XDG_CACHE_HOME/lamina/layers."""


@cache.command()
@click.option("--max-size", metavar="SIZE", default="0", help="Keep at most SIZE (e.g. 2G); default: empty it.")
def prune(max_size: str) -> None:
    """Drop least-recently-used layers until the cache fits in --max-size."""
    from lamina.cache import LayerCache
    from lamina.registry.api import parse_size

    limit = 0 if max_size == "0" else parse_size(max_size)
    store = LayerCache()
    try:
        removed, freed = store.prune(limit)
        count, size = store.stats()
    finally:
        store.close()
    click.echo(f"removed {removed} layers ({freed} bytes); {count} layers ({size} bytes) remain")


def run(argv: list[str] | None = None) -> int:
    """Entry point: every failure becomes one ``lamina: error:`` line and an exit status."""
    from lamina.errors import LaminaError

    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        code = main.main(args=argv, prog_name="lamina", standalone_mode=False)
        if isinstance(code, int):  # ctx.exit(n) returns here when click is not standalone
            return code
    except LaminaError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        click.echo(f"lamina: error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("lamina: error: aborted", err=True)
        return 130
    except click.ClickException as exc:
        click.echo(f"lamina: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("lamina: error: interrupted", err=True)
        return 130
    except Exception as exc:  # a bug in lamina: one line, the traceback behind --debug
        if debug:
            import traceback

            traceback.print_exc()
        else:
            click.echo(f"lamina: error: internal error: {exc!r} (run with --debug for the traceback)", err=True)
        return 70
    return 0


def console() -> None:
    sys.exit(run())
