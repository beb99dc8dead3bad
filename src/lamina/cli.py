"""Click wiring only: parse flags, call the library, turn LaminaErrors into exit codes.

Imports of the library happen inside the commands, so ``lamina --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

from lamina.version import __version__

if TYPE_CHECKING:
    from pathlib import Path


class _Path:
    """click's ``path_type`` for path options: the value becomes a pathlib.Path, and pathlib
    (with urllib.parse behind it) is imported when a command is given a path, not for --help."""

    def __new__(cls, value: str) -> Path:  # type: ignore[misc]
        from pathlib import Path

        return Path(value)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lamina")
@click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
@click.pass_context
def main(ctx: click.Context, /, debug: bool) -> None:
    """Build lean, reproducible OCI images from files, without a daemon or a Dockerfile."""
    ctx.ensure_object(dict)["debug"] = debug


def _registry_options(func: Any) -> Any:
    for option in reversed([
        click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]",
                     help="Use plain HTTP for this registry (localhost and 127.0.0.0/8 always do)."),
        click.option("--ca-file", type=click.Path(dir_okay=False), help="Trust this CA bundle for registries too."),
        click.option("--chunk-size", metavar="SIZE", help="Upload blobs in chunks of SIZE (e.g. 16M)."),
    ]):
        func = option(func)
    return func


def _registry(ctx: click.Context, /, opts: dict[str, Any], quiet: bool = False) -> Any:
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


def _cache_repo(text: str | None) -> str | None:
    if not text:
        return None
    from lamina.registry.cache_repo import parse_cache_repo

    parse_cache_repo(text)  # a bad repository is a usage error before anything is built
    return text


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


def _pairs(values: tuple[str, ...], flag: str) -> tuple[tuple[str, str], ...]:
    from lamina.spec import parse_pair

    return tuple(parse_pair(v, flag) for v in values)


def _debs_layer(debs: tuple[str, ...], packages: tuple[str, ...]) -> list[Any]:
    """All --deb and --package flags together: one package layer (none if neither is given)."""
    if not debs and not packages:
        return []
    from lamina.sources.apt import parse_package
    from lamina.sources.deb import DebFile
    from lamina.spec import DebsLayer

    return [DebsLayer(tuple(DebFile(d, key=d) for d in debs), tuple(parse_package(p) for p in packages))]


@main.command()
@click.argument("spec_file", required=False, type=click.Path(dir_okay=False, path_type=_Path))
@click.option("--add", "adds", multiple=True, metavar="SRC:DST[:MODE]",
              help="Copy a file or directory into the image (one layer each).")
@click.option("--tarball", "tarballs", multiple=True, metavar="PATH[:DST]",
              help="Add a rootfs tarball (tar, gz, xz, bz2, zstd) as a layer.")
@click.option("--from", "base", metavar="IMAGE",
              help="Base image: scratch, docker-archive:PATH[:REF|@N], oci-archive:PATH[:REF], oci:DIR[:REF], or a path.")
@click.option("--copy-from", "copies", multiple=True, metavar="IMAGE:SRC:DST",
              help="Copy SRC out of another image (COPY --from), one layer each.")
@click.option("--deb", "debs", multiple=True, metavar="FILE.deb",
              help="Install a Debian package file (no scripts run); all --deb/--package make one layer.")
@click.option("--package", "packages", multiple=True, metavar="NAME[=VERSION]",
              help="Install a package and its dependencies from the --apt-source repositories.")
@click.option("--apt-source", "apt_sources", multiple=True, nargs=3, metavar="URL|DIR SUITE COMPONENT",
              help="A Debian repository for --package (Release hashes checked).")
@click.option("--apt-keyring", type=click.Path(dir_okay=False), metavar="KEYRING",
              help="Check the apt sources' Release signatures with this OpenPGP keyring (gpgv).")
@click.option("--remove", "removes", multiple=True, metavar="PATH", help="Drop PATH of the base image (a whiteout).")
@click.option("--ca-certs", "ca_certs", multiple=True, is_flag=False, flag_value="@system", metavar="[FILE|DIR]",
              help="A CA bundle at /etc/ssl/certs/ca-certificates.crt (alone: this machine's), SSL_CERT_FILE set.")
@click.option("--accounts", is_flag=True, default=None, help="Minimal /etc/passwd, /etc/group (root, nonroot 65532).")
@click.option("--tmp", is_flag=True, default=None, help="A /tmp directory with mode 1777.")
@click.option("--tzdata", is_flag=False, flag_value="@system", default=None, metavar="[DIR]",
              help="Zoneinfo at /usr/share/zoneinfo (alone: this machine's).")
@click.option("--sbom", metavar="spdx", help="Write an SPDX 2.3 SBOM (every file, Go modules) beside the output.")
@click.option("--sbom-attach", is_flag=True, default=None, help="Also attach the SBOM as an OCI artifact (subject: the image).")
@click.option("--provenance", is_flag=True, default=None,
              help="Attach SLSA provenance (in-toto) naming every input by digest (subject: the image).")
@click.option("--provenance-key", type=click.Path(dir_okay=False, path_type=_Path), metavar="KEY",
              help="Also sign it (DSSE, cosign-format KEY): written beside the output, pushed as sha256-<hex>.att.")
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
@click.option("-o", "--output", type=click.Path(path_type=_Path, allow_dash=True),
              help="Write the image tarball here ('-': to stdout, as docker save; the digest then goes to stderr).")
@click.option("--oci-dir", type=click.Path(path_type=_Path), help="Write an OCI image layout directory here.")
@click.option("--compression", metavar="gzip|zstd|none", help="Layer compression (default gzip).")
@click.option("--source-date-epoch", metavar="N", help="Timestamp for config and files (default $SOURCE_DATE_EPOCH, else 0).")
@click.option("--metadata-file", type=click.Path(path_type=_Path), help="Write digests and sizes as JSON here.")
@click.option("--depfile", type=click.Path(path_type=_Path),
              help="Write a Make rule here: the outputs depend on every file the build read (as gcc -MD).")
@click.option("--force", is_flag=True, help="Build even when the outputs are up to date with the inputs.")
@click.option("--no-cache", is_flag=True, help="Build every layer; do not use or fill the layer cache.")
@click.option("--check-reproducible", is_flag=True,
              help="Build twice (cold cache, shuffled walk) first; fail with the diff if the digests differ.")
@click.option("--push", "push_to", metavar="REF", help="Push the image to a registry (prints REF@sha256:…).")
@click.option("--cache-repo", metavar="REGISTRY/REPO", envvar="LAMINA_CACHE_REPO",
              help="Share the layer cache through this registry repository ($LAMINA_CACHE_REPO).")
@click.option("--cache-repo-readonly", is_flag=True, default=None, envvar="LAMINA_CACHE_REPO_READONLY",
              help="Use the cache repository's layers, never write to it (untrusted branches).")
@click.option("--sign-gpg-key", metavar="FINGERPRINT", help="Sign the pushed image with this OpenPGP key ($GNUPGHOME).")
@click.option("--lookaside", metavar="DIR", help="Where --sign-gpg-key writes the signature (registries.d lookaside).")
@_registry_options
@click.option("-q", "--quiet", is_flag=True, help="Print only the manifest digest.")
@click.pass_context
def build(ctx: click.Context, /, spec_file: Path | None, adds: tuple[str, ...], tarballs: tuple[str, ...], copies: tuple[str, ...],
          removes: tuple[str, ...], **opts: Any) -> None:
    """Build an image from files, flags and/or a lamina.toml spec file.

    Flags override the file. Layers: the base's, then --remove, then the file's, then
    --tarball, --copy-from and --add layers in that order.
    """
    from lamina import spec as specs
    from lamina.model import Platform

    quiet = opts.pop("quiet")
    streaming = str(opts["output"]) == "-"
    if streaming and (sys.stdout is None or sys.stdout.isatty()):
        from lamina.errors import UsageError

        # None: fd 1 was closed at startup, and whatever lamina opens next could take its number.
        where = "closed" if sys.stdout is None else "a terminal"
        raise UsageError(f"-o - writes the tarball to stdout, which is {where}; redirect it or give -o PATH")
    no_cache = opts.pop("no_cache")
    check = opts.pop("check_reproducible")
    push_to = opts.pop("push_to")
    registry_options = _registry(ctx, opts, quiet)
    sign_key, lookaside = opts.pop("sign_gpg_key"), opts.pop("lookaside")
    if sign_key:
        _check_sign_flags(sign_key, lookaside, push_to)
    attest_key = None
    if opts["provenance_key"] is not None:
        from lamina.sign import cosign

        attest_key = cosign.load_private(opts["provenance_key"], _password(confirm=False))  # before building
        opts["provenance"] = True
    flags: dict[str, Any] = {
        "layers": [
            *(specs.parse_tarball(t) for t in tarballs),
            *(specs.FilesLayer((specs.parse_copy_from(c),)) for c in copies),
            *_debs_layer(opts.pop("debs"), opts.pop("packages")),
            *(specs.FilesLayer((specs.parse_add(a),)) for a in adds),
        ],
        "apt": _apt_sources(opts.pop("apt_sources")),
        "apt_keyring": opts.pop("apt_keyring"),
        "base": specs.BaseSpec(opts["base"], key=opts["base"]) if opts["base"] else None,
        "remove": removes,
        "hermetic": opts["hermetic"],
        "lint": opts["lint"],
        "sbom": specs.parse_sbom(opts["sbom"]) if opts["sbom"] else None,
        "sbom_attach": opts["sbom_attach"],
        "provenance": opts["provenance"],
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
        "cache_repo": _cache_repo(opts["cache_repo"]),
        "cache_repo_readonly": opts["cache_repo_readonly"],
        "depfile": opts["depfile"],
    }
    if spec_file is None and not flags["layers"] and os.path.isfile(specs.DEFAULT_SPEC):
        from pathlib import Path

        spec_file = Path(specs.DEFAULT_SPEC)
    base = specs.read_spec(spec_file) if spec_file is not None else specs.BuildSpec()
    spec = specs.merge(base, flags)

    # Progress is for people at a terminal; CI logs and --quiet get the digest alone.
    chatty = not quiet and sys.stderr.isatty()

    def progress(message: str) -> None:
        if chatty:
            click.echo(message, err=True)

    def note(message: str) -> None:  # things the user must hear about, TTY or not
        if not quiet:
            click.echo(f"lamina: note: {message}", err=True)

    def report(line: str) -> None:  # lint findings, summarised; the diff of --check-reproducible
        click.echo(f"lamina: {line}", err=True)

    command = None
    if not (opts["force"] or no_cache or check or push_to or attest_key):
        from lamina.api import up_to_date
        from lamina.uptodate import Command

        # Remembered with the outputs: the same command line is checked before click loads (lamina.__main__).
        checked = tuple(str(v) for v in (registry_options.ca_file, flags["apt_keyring"]) if v)
        command = Command(ctx.obj["argv"], spec_file, quiet, checked) if "argv" in ctx.obj else None
        digest = up_to_date(spec, spec_path=spec_file, command=command)
        if digest is not None:  # nothing to do: the outputs hold this image (lamina.uptodate)
            progress("lamina: up to date")
            click.echo(digest, err=streaming)
            return
    from lamina.api import build_image

    result = build_image(spec, spec_path=spec_file, push=push_to, registry=registry_options, use_cache=not no_cache,
                         reproducible_check=check, progress=progress, note=note, report=report, meter=_meter(chatty),
                         invocation=_invocation(ctx, spec_file) if spec.provenance else None,
                         sign_gpg_key=sign_key, lookaside=lookaside,
                         attest_key=attest_key, force=True, command=command)  # up to date was checked above
    if chatty:
        for path in result.outputs:
            click.echo(f"wrote {path}", err=True)
    click.echo(result.pushed or str(result.image.digest), err=streaming)  # stdout carries the tarball


def _apt_sources(given: tuple[tuple[str, str, str], ...]) -> tuple[Any, ...]:
    if not given:
        return ()
    from lamina.sources.apt import parse_apt_source

    return tuple(parse_apt_source(*a) for a in given)


def _invocation(ctx: click.Context, spec_file: Path | None) -> Any:
    """What the user asked for, for the provenance statement (the only reader of it)."""
    from lamina.provenance import Invocation

    # How the build talks and whether it was forced change nothing it makes: left out, so that
    # -q gives the same statement.
    given = {k: v for k, v in ctx.params.items() if v not in (None, False, ()) and k not in ("spec_file", "quiet", "force")}
    return Invocation(spec_file, given)


def _check_sign_flags(key: str, lookaside: str | None, push_to: str | None) -> None:
    from lamina.errors import UsageError
    from lamina.sign.gpg import parse_fingerprint

    parse_fingerprint(key)
    if not push_to:
        raise UsageError("--sign-gpg-key signs what is pushed: give --push REF too")
    if not lookaside:
        raise UsageError("--sign-gpg-key needs --lookaside DIR (where the signature goes)")


@main.command()
@click.argument("image", type=click.Path(path_type=_Path))
@click.argument("reference")
@_registry_options
@click.option("--metadata-file", type=click.Path(path_type=_Path), help="Write the pushed reference as JSON here.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the pushed reference.")
@click.pass_context
def push(ctx: click.Context, /, image: Path, reference: str, metadata_file: Path | None, quiet: bool, **opts: Any) -> None:
    """Push IMAGE (a lamina tarball or OCI layout, every platform) to REFERENCE."""
    from lamina.api import push_image

    pushed = push_image(image, reference, _registry(ctx, opts, quiet), metadata_file)
    if not quiet and sys.stderr.isatty():
        s = pushed.stats
        click.echo(f"lamina: {s.uploaded} blobs uploaded ({s.bytes} bytes), {s.mounted} mounted, {s.skipped} already there", err=True)
    click.echo(pushed.reference)


@main.command()
@click.argument("reference")
@click.option("--gpg-key", metavar="FINGERPRINT", help="Sign with this OpenPGP key from $GNUPGHOME (needs --lookaside).")
@click.option("--lookaside", metavar="DIR", help="The lookaside directory registries.d points at.")
@click.option("--key", type=click.Path(dir_okay=False, path_type=_Path),
              help="Sign with this cosign-format private key (password: $LAMINA_KEY_PASSWORD or a prompt).")
@_registry_options
@click.pass_context
def sign(ctx: click.Context, /, reference: str, gpg_key: str | None, lookaside: str | None, key: Path | None,
         **opts: Any) -> None:
    """Sign the image REFERENCE names in its registry: containers/image simple signing (--gpg-key)
    into a lookaside directory, or a cosign signature pushed beside it (--key)."""
    from lamina.errors import UsageError
    from lamina.sign import gpg, simple, target

    if (gpg_key is None) == (key is None):
        raise UsageError("give one of --gpg-key FINGERPRINT (with --lookaside DIR) or --key KEY")
    options = _registry(ctx, opts)
    if key is not None:
        from lamina.sign import cosign

        private = cosign.load_private(key, _password(confirm=False))  # a wrong password fails before the registry
        click.echo(f"pushed {cosign.sign(target.resolve(reference, options), private, options)}")
        return
    gpg.parse_fingerprint(gpg_key)  # type: ignore[arg-type]  # a malformed flag fails before the registry is asked
    if not lookaside:
        raise UsageError("--gpg-key needs --lookaside DIR (where the signature goes)")
    where = simple.lookaside_dir(lookaside)
    click.echo(f"wrote {simple.sign(target.resolve(reference, options), gpg_key, where)}")  # type: ignore[arg-type]


def _password(confirm: bool) -> bytes:
    """$LAMINA_KEY_PASSWORD, else asked on the terminal (never echoed, never on the command line)."""
    from lamina.errors import UsageError

    if "LAMINA_KEY_PASSWORD" in os.environ:
        return os.environ["LAMINA_KEY_PASSWORD"].encode()
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask the key password on: set LAMINA_KEY_PASSWORD")
    return str(click.prompt("Key password", hide_input=True, confirmation_prompt=confirm, err=True,
                            default="", show_default=False)).encode()


@main.command()
@click.option("--out", "prefix", required=True, type=click.Path(path_type=_Path), metavar="PREFIX",
              help="Write PREFIX.key (encrypted) and PREFIX.pub.")
def keygen(prefix: Path) -> None:
    """Make an ECDSA P-256 key pair in cosign's format, for lamina sign --key."""
    from lamina.sign import cosign

    private, public = cosign.keygen(prefix, _password(confirm=True))
    click.echo(f"wrote {private} (private, encrypted) and {public}")


@main.command()
@click.argument("reference")
@click.option("--gpg-pubkey", type=click.Path(dir_okay=False, path_type=_Path),
              help="Accept OpenPGP signatures by the public key(s) in this file (needs --lookaside).")
@click.option("--lookaside", metavar="DIR", help="The lookaside directory the signatures are in.")
@click.option("--key", type=click.Path(dir_okay=False, path_type=_Path), help="Accept cosign signatures by this public key.")
@click.option("--provenance", is_flag=True, help="With --key: also require SLSA provenance signed by it (sha256-<hex>.att).")
@_registry_options
@click.pass_context
def verify(ctx: click.Context, /, reference: str, gpg_pubkey: Path | None, lookaside: str | None, key: Path | None,
           provenance: bool, **opts: Any) -> None:
    """Check that a signature by a given key covers what REFERENCE names now (exit 0 or 1)."""
    from lamina.errors import UsageError
    from lamina.sign import simple, target

    if (gpg_pubkey is None) == (key is None) or (gpg_pubkey is not None and not lookaside):
        raise UsageError("give --gpg-pubkey FILE --lookaside DIR, or --key PUBLIC_KEY")
    if provenance and key is None:
        raise UsageError("--provenance checks a DSSE attestation: give the cosign-format public key with --key")
    options = _registry(ctx, opts, quiet=True)
    if key is not None:
        from lamina.sign import cosign, dsse

        cosign.load_public(key)  # a bad key file fails before the registry is asked
        signed = target.resolve(reference, options)
        line = cosign.verify(signed, key, options)
        click.echo(f"{line}; {dsse.verify(signed, key, options)}" if provenance else line)
        return
    where = simple.lookaside_dir(lookaside)  # type: ignore[arg-type]
    click.echo(simple.verify(target.resolve(reference, options), gpg_pubkey, where))  # type: ignore[arg-type]


@main.command()
@click.argument("registry")
@click.option("-u", "--username", required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin (the only way: never on the command line).")
@_registry_options
@click.pass_context
def login(ctx: click.Context, /, registry: str, username: str, password_stdin: bool, **opts: Any) -> None:
    """Check credentials against REGISTRY and store them in $DOCKER_CONFIG/config.json."""
    from lamina.errors import UsageError
    from lamina.registry import api

    if not password_stdin:
        raise UsageError("give the password on stdin with --password-stdin")
    password = sys.stdin.readline().rstrip("\n")
    path = api.login(registry, username, password, _registry(ctx, opts))
    click.echo(f"login succeeded; credentials saved in {path}")


@main.command()
@click.argument("spec_file", required=False, default="lamina.toml", type=click.Path(dir_okay=False, path_type=_Path))
def lock(spec_file: Path) -> None:
    """Pin every input of SPEC_FILE by sha256 in a lamina.lock beside it (and every Debian
    package its --package requests resolve to)."""
    from lamina.build import resolve_packages
    from lamina.pins import write_lock
    from lamina.spec import read_spec

    spec = read_spec(spec_file)
    path, count = write_lock(spec, spec_file, resolve_packages(spec))
    click.echo(f"wrote {path} ({count} inputs pinned)")


@main.command()
@click.argument("image", type=click.Path(path_type=_Path))
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


@main.command(name="index")
@click.argument("images", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(path_type=_Path, allow_dash=True), help="Write the tarball here (- for stdout).")
@click.option("--oci-dir", type=click.Path(path_type=_Path), help="Write (or add to) an OCI image layout here.")
@click.option("-t", "--tag", "tags", multiple=True, metavar="NAME[:TAG]", help="Image name (repeatable).")
@click.option("--push", "push_to", metavar="REF", help="Push the index to a registry (prints REF@sha256:…).")
@click.option("--docker-platform", metavar="OS/ARCH[/VARIANT]",
              help="Which platform the tarball's manifest.json (docker load) describes (default: the first).")
@click.option("--metadata-file", type=click.Path(path_type=_Path), help="Write digests and sizes as JSON here.")
@click.option("--no-arch-check", "arch_check", flag_value=False, default=True,
              help="Do not check that each manifest's executables are for its platform.")
@_registry_options
@click.pass_context
def index_command(ctx: click.Context, /, images: tuple[str, ...], output: Path | None, oci_dir: Path | None,
                  tags: tuple[str, ...], push_to: str | None, docker_platform: str | None, metadata_file: Path | None,
                  arch_check: bool, **opts: Any) -> None:
    """Join IMAGES (tarballs, layouts, registry references; one or more platforms each) into
    one multi-platform image: per-platform manifests kept byte for byte, platforms unique."""
    from lamina.api import index_images
    from lamina.model import Platform
    from lamina.spec import parse_tag

    streaming = str(output) == "-"
    if streaming and (sys.stdout is None or sys.stdout.isatty()):
        from lamina.errors import UsageError

        raise UsageError("-o - writes the tarball to stdout, which is a terminal or closed; redirect it or give -o PATH")
    result = index_images(list(images), output=output, oci_dir=oci_dir, tags=tuple(parse_tag(t) for t in tags),
                          push=push_to, docker_platform=Platform.parse(docker_platform) if docker_platform else None,
                          metadata_file=metadata_file, registry=_registry(ctx, opts), check_elf=arch_check)
    click.echo(result.pushed or str(result.image.digest), err=streaming)


@main.command(name="diff")
@click.argument("first")
@click.argument("second")
@click.option("--platform", metavar="OS/ARCH", help="Which platform of multi-platform images (default linux/amd64).")
@_registry_options
@click.pass_context
def diff_command(ctx: click.Context, /, first: str, second: str, platform: str | None, **opts: Any) -> None:
    """Explain why two images differ: config, then layer by layer, entry by entry."""
    from lamina.diff import diff_refs
    from lamina.model import Platform

    lines = diff_refs(first, second, Platform.parse(platform) if platform else None, _registry(ctx, opts))
    for line in lines:
        click.echo(line)
    if lines:
        ctx.exit(1)


@main.command(name="lint")
@click.argument("image", type=click.Path(path_type=_Path))
@click.option("--ignore", "ignore", multiple=True, metavar="L00N", help="Ignore a finding id (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Findings as JSON.")
def lint_command(image: Path, ignore: tuple[str, ...], as_json: bool) -> None:
    """Check an image for what breaks on a minimal image: a finished image (tarball or
    layout), or a spec file (built in a temporary directory, nothing written)."""
    import json

    from lamina.errors import LintError
    from lamina.lint import lint_stored, summarise

    if image.suffix == ".toml":
        from lamina.api import lint_spec

        findings = lint_spec(image, _lint_ids(ignore))
    else:
        findings = lint_stored(str(image), _lint_ids(ignore))
    if as_json:
        click.echo(json.dumps([{"platform": str(p), **f.to_json()} for p, f in findings], indent=2))
    else:
        for platform, line in summarise(findings):
            click.echo(f"{platform}: {line}")
    errors = sum(1 for _, f in findings if f.severity == "error")
    if errors:
        raise LintError(f"{errors} lint error(s) in {image}")


@main.group()
def cache() -> None:
    """The layer cache under $XDG_CACHE_HOME/lamina/layers (and what lamina remembers beside it)."""


@cache.command()
@click.option("--max-size", metavar="SIZE", default="0", help="Keep at most SIZE (e.g. 2G); default: empty it.")
@click.option("--remote", metavar="REGISTRY/REPO",
              help="Prune this cache repository instead (with --older-than).")
@click.option("--older-than", metavar="DAYS", help="With --remote: delete entries created more than DAYS ago.")
@_registry_options
@click.pass_context
def prune(ctx: click.Context, /, max_size: str, remote: str | None, older_than: str | None, **opts: Any) -> None:
    """Drop least-recently-used layers until the cache fits in --max-size, or old entries of a cache repository.

    Emptying it (--max-size 0, the default) also drops the up-to-date records, the census
    memos of `lamina index` and the images pulled from registries (every output is then built
    again once, every base pulled again); what a running build uses stays.
    """
    from lamina.cache import LayerCache
    from lamina.errors import UsageError
    from lamina.registry.api import parse_size

    if remote or older_than:
        if not (remote and older_than):
            raise UsageError("cache prune: --remote REGISTRY/REPO and --older-than DAYS go together")
        from lamina.registry.cache_repo import prune as prune_remote

        deleted, kept = prune_remote(remote, _registry(ctx, opts), older_than)
        click.echo(f"deleted {deleted} cache entries from {remote}; {kept} remain")
        return

    limit = 0 if max_size == "0" else parse_size(max_size)
    store = LayerCache()
    try:
        removed, freed = store.prune(limit)
        count, size = store.stats()
    finally:
        store.close()
    click.echo(f"removed {removed} layers ({freed} bytes); {count} layers ({size} bytes) remain")
    if limit == 0:  # emptied: what was derived from layers goes too
        from lamina.join import forget_censuses
        from lamina.registry.pull import prune as prune_pulled
        from lamina.uptodate import forget

        records, record_bytes = forget()
        censuses, census_bytes = forget_censuses()
        click.echo(f"removed {records} up-to-date records and {censuses} census memos ({record_bytes + census_bytes} bytes)")
        blobs, blob_bytes = prune_pulled()
        click.echo(f"removed {blobs} blobs of pulled images ({blob_bytes} bytes)")


def run(argv: list[str] | None = None) -> int:
    """Entry point: every failure becomes one ``lamina: error:`` line and an exit status."""
    from lamina.errors import LaminaError

    args = list(argv if argv is not None else sys.argv[1:])
    debug = "--debug" in args
    try:
        code = main.main(args=args, prog_name="lamina", standalone_mode=False, obj={"argv": tuple(args)})
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
    """The entry point of installs made before lamina.__main__:main (which tunes the collector)."""
    sys.exit(run())
