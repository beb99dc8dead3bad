"""What a signature is about: a registry reference and the digest of the manifest it names."""

from __future__ import annotations

import attrs

from lamina.errors import UsageError
from lamina.model import Digest, Reference
from lamina.registry.options import Options


@attrs.frozen
class Target:
    reference: Reference  # as the user named it, normalised (host/repo:tag or host/repo@digest)
    digest: Digest  # of the top manifest (an index for multi-platform images), as stored

    @property
    def identity(self) -> str:
        """The ``docker-reference`` a signature claims: the tag as pushed, else the repository."""
        ref = self.reference
        return f"{ref.name}:{ref.tag}" if ref.tag else ref.name


def parse_reference(text: str) -> Reference:
    if text.startswith(("oci:", "oci-archive:", "docker-archive:")):
        raise UsageError(f"{text}: signatures are for images in a registry; push it first")
    return Reference.parse(text.removeprefix("docker://"))


def resolve(text: str, options: Options) -> Target:
    """Ask the registry for the manifest the reference names and hash its bytes (never trust a
    header): a tag is looked up every time, a digest is checked against what is served."""
    from lamina.registry.pull import Puller

    ref = parse_reference(text)
    registry = options.registry(ref.registry)
    try:
        expected = Digest.parse(ref.digest) if ref.digest else None
        desc = Puller(registry, ref.repository).manifest(ref.digest or ref.tag, expected)
    finally:
        registry.close()
    return Target(ref, desc.digest)
