"""The one resolver: ``scratch``, archives, layouts and registry references → ``Image``.

Every command that names an image (build's base and ``--copy-from``, diff, lint, inspect,
push) goes through here, so they all read the same image the same way. Each name is opened
once per resolver and closed with it; its merged filesystem is read at most once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, BinaryIO

from lamina.errors import UsageError
from lamina.image import Base, Image
from lamina.model import Layer
from lamina.model import Platform, Reference
from lamina.sources.base import BaseRef, is_registry_ref, open_all, open_image
from lamina.sources.rootfs import MergedFS

Note = Callable[[str], None]


class Resolver:
    """Images by the names users give them, opened once, closed by the caller's ExitStack."""

    def __init__(self, stack: contextlib.ExitStack, platform: Platform | None, registry: Any = None,
                 note: Note | None = None) -> None:
        self._stack = stack
        self.platform = platform  # wanted platform for indexes; None: the default
        self._registry = registry  # registry.options.Options, for images that live in a registry
        self._note = note
        self._images: dict[str, Image] = {}
        self._fs: dict[str, MergedFS] = {}
        self._held: list[int] = []  # pulled blobs in use, flocked: released when the stack closes
        stack.callback(self._release)

    def _release(self) -> None:
        import os

        while self._held:
            os.close(self._held.pop())

    def image(self, text: str) -> Image:
        if text not in self._images:
            if is_registry_ref(text):
                source, image = self._pull(text)
            else:
                source, image = open_image(BaseRef.parse(text), self.platform)
            self._stack.callback(source.close)
            self._images[text] = image
        return self._images[text]

    def _pull(self, text: str) -> Any:
        from lamina.registry.options import Options
        from lamina.registry.pull import fetch
        from lamina.sources.base import open_descriptor

        options = self._registry or Options()
        root, desc = fetch(text, self.platform, options.registry, self._note, self._held)
        return open_descriptor(root, desc, self.platform, text)

    def opened(self) -> dict[str, Image]:
        """Every image opened so far, by the name it was asked for (for provenance)."""
        return dict(self._images)

    def all_platforms(self, text: str) -> list[Image]:
        """Every platform's image that ``text`` names: one for a single image, each manifest
        of an index (a registry index is pulled platform by platform)."""
        if not is_registry_ref(text):
            source, found = open_all(BaseRef.parse(text))
            self._stack.callback(source.close)
            return found
        from lamina.registry.options import Options
        from lamina.registry.pull import fetch
        from lamina.sources.archive import ImageSource, is_index, manifests
        from lamina.sources.base import open_descriptor

        options = self._registry or Options()
        root, top = fetch(text, self.platform, options.registry, self._note, self._held)
        if not is_index(top):
            return [self.image(text)]
        with ImageSource.open(root) as cache:
            children = [c for c in manifests(cache, top) if c.platform is not None]
        out = []
        for child in children:
            fetch(text, child.platform, options.registry, self._note, self._held)  # that platform's blobs
            source, image = open_descriptor(root, child, child.platform, text)
            self._stack.callback(source.close)
            out.append(image)
        return out

    def openers(self, text: str) -> list[Callable[[], BinaryIO]]:
        """Each layer's verified uncompressed tar stream."""
        from lamina.sources.archive import layer_openers  # a build from scratch opens no image

        return layer_openers(self.image(text))

    def filesystem(self, text: str) -> tuple[MergedFS, list[Callable[[], BinaryIO]]]:
        openers = self.openers(text)
        if text not in self._fs:
            self._fs[text] = MergedFS.read(text, openers)
        return self._fs[text], openers

    def base(self, text: str, layers: tuple[Layer, ...]) -> Base:
        """What ``--from text`` contributes to a build, with the names its annotations carry."""
        image = self.image(text)
        return Base(image.config, layers, name=reference_name(text, image),
                    digest=None if image.derived_manifest else image.digest)


def reference_name(text: str, image: Image) -> str:
    """The base's name for ``org.opencontainers.image.base.name``: the registry reference as
    given, else the archive's own full tag; never a host path (the digest would then depend on
    where the checkout lives). Empty when the base has no such name."""
    if is_registry_ref(text):
        return str(Reference.parse(text.removeprefix("docker://")))
    for name in image.names:
        if "/" in name or ":" in name:  # a bare ref.name ("latest") names no repository
            try:
                return str(Reference.parse(name))
            except UsageError:
                continue
    return ""
