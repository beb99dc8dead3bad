"""Image references (``[host[:port]/]path[:tag][@digest]``), after the distribution grammar.

The grammar is distribution/reference's ``reference.go``; normalisation (``alpine`` →
``docker.io/library/alpine:latest``) is what docker and containerd do.
"""

from __future__ import annotations

import re

import attrs

from lamina.errors import ParseError

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
# Compiled by re on first use (and cached there): a build that names no image never needs it.
_REFERENCE = (rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
              rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$")


@attrs.frozen
class Reference:
    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    @classmethod
    def parse(cls, text: str) -> Reference:
        match = re.match(_REFERENCE, text, re.ASCII)  # ASCII: \w must not admit "café", which docker load refuses
        if not match or len(match["path"]) + len(match["domain"] or "") > 255:
            raise ParseError(f"bad image reference {text!r}: expected [host[:port]/]name[:tag][@digest]")
        domain, path = match["domain"], match["path"]
        # distribution: the first component is a host only if it has '.' or ':' or is localhost.
        if domain is not None and not ("." in domain or ":" in domain or domain == "localhost"):
            path, domain = f"{domain}/{path}", None
            if not re.match(rf"^{_COMPONENT}$", path.split("/")[0]):
                raise ParseError(f"bad image reference {text!r}: repository names must be lowercase")
        registry = domain or DEFAULT_REGISTRY
        if registry == DEFAULT_REGISTRY and "/" not in path:
            path = f"library/{path}"
        tag = match["tag"] or ("" if match["digest"] else DEFAULT_TAG)
        return cls(registry, path, tag, match["digest"] or "")

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def familiar_name(self) -> str:
        """The short name docker shows (``hello``, not ``docker.io/library/hello``)."""
        if self.registry == DEFAULT_REGISTRY:
            return self.repository.removeprefix("library/")
        return self.name

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out
