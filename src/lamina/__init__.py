"""lamina: lean, reproducible OCI images from files, without a daemon or a Dockerfile.

The Python API (``build_image``, ``open_image``, ``BuildSpec``, ``BuildResult``, ``Image``)
is exported lazily, so that ``import lamina`` (and so the CLI's start-up) costs nothing.
"""

from __future__ import annotations

from lamina.version import __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: `import lamina` loads two modules

_LAZY = {
    "build_image": "lamina.api",
    "open_image": "lamina.api",
    "up_to_date": "lamina.api",
    "BuildResult": "lamina.build",
    "BuildSpec": "lamina.spec",
    "read_spec": "lamina.spec",
    "Image": "lamina.image",
}
__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:
    from typing import Any

    from lamina.api import build_image, open_image, up_to_date
    from lamina.build import BuildResult
    from lamina.image import Image
    from lamina.spec import BuildSpec, read_spec


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lamina' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
