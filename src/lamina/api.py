"""lamina's Python API: what the CLI calls, for build tools that would rather not shell out.

    from lamina import BuildSpec, build_image, open_image

    result = build_image(read_spec(Path("lamina.toml")), spec_path=Path("lamina.toml"))
    print(result.image.digest, [str(p) for p in result.outputs])
    with open_image("oci:out/layout") as image:
        print(image.platform, [layer.diff_id for layer in image.layers])

Everything here takes and returns lamina's own values (``BuildSpec``, ``Image``,
``BuildResult``); errors are ``lamina.errors.LaminaError`` subclasses with a message written
for people, as the CLI prints them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lamina.build import BuildResult, build, check_reproducible, epoch_from_env
from lamina.errors import LaminaError
from lamina.image import Image
from lamina.model import Platform, Reference
from lamina.spec import BuildSpec

Say = Callable[[str], None]


def build_image(spec: BuildSpec, *, spec_path: Path | None = None, epoch: int | None = None,
                push: str | None = None, registry: Any = None, use_cache: bool = True,
                reproducible_check: bool = False, progress: Say | None = None, note: Say | None = None,
                findings: Callable[[list[Any]], None] | None = None, meter: Any = None) -> BuildResult:
    """Build ``spec``: write its outputs, push it when ``push`` names a reference.

    ``epoch``: the build's time (default: the spec's, else $SOURCE_DATE_EPOCH, else 0).
    ``findings`` receives the lint findings before anything is written (default: errors
    raise LintError); ``progress`` and ``note`` receive lines for people.
    """
    from lamina.lint import check_findings
    from lamina.pins import read_lock

    if push is not None:
        Reference.parse(push)  # a bad reference is a usage error before anything is built
    if epoch is None:
        epoch = spec.source_date_epoch if spec.source_date_epoch is not None else epoch_from_env(os.environ)
    if reproducible_check:
        differences = check_reproducible(spec, epoch=epoch, registry=registry)
        if differences:
            if note is None:
                raise LaminaError("not reproducible: two builds of the same inputs differ: " + "; ".join(differences))
            for line in differences:
                note(line)
            raise LaminaError("not reproducible: two builds of the same inputs differ (above)")
    pusher = None
    if push is not None:
        from lamina.registry import api as registry_api
        from lamina.registry.options import Options

        options = registry or Options()

        def pusher(plan: Any, digest: Any = None) -> Any:
            target = push if digest is None else f"{Reference.parse(push).name}@{digest}"
            return registry_api.push(plan, target, options)

    return build(spec, epoch=epoch, progress=progress, note=note, lock=read_lock(spec_path), push=pusher,
                 registry=registry, use_cache=use_cache, meter=meter,
                 lint=(findings or check_findings) if spec.lint else None, lint_ignore=spec.lint_ignore)


@contextlib.contextmanager
def open_image(name: str, *, platform: Platform | None = None, registry: Any = None) -> Iterator[Image]:
    """The image ``name`` names (as ``--from`` takes it), open until the block ends."""
    from lamina.resolve import Resolver

    with contextlib.ExitStack() as stack:
        yield Resolver(stack, platform, registry).image(name)


__all__ = ["BuildResult", "BuildSpec", "build_image", "open_image"]
