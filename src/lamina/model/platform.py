"""Platforms (``os/arch[/variant]``), normalised as containerd does."""

from __future__ import annotations

import attrs

from lamina.errors import ParseError

# The GOOS/GOARCH pairs an OCI image may name (image-spec config.md) that lamina builds for.
_KNOWN_OS = frozenset({"linux", "windows", "freebsd", "darwin"})
_KNOWN_ARCH = frozenset(
    {"amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le", "loong64"}
)
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386", "armhf": "arm"}


@attrs.frozen
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ParseError(f"bad platform {text!r}: expected os/arch[/variant], e.g. linux/amd64")
        os_name, arch = parts[0], _ARCH_ALIASES.get(parts[1], parts[1])
        variant = parts[2] if len(parts) == 3 else ""
        if os_name not in _KNOWN_OS:
            raise ParseError(f"unknown platform {text!r}: unknown os {os_name!r}")
        if arch not in _KNOWN_ARCH:
            raise ParseError(
                f"unknown platform {text!r}: unknown architecture {arch!r} "
                f"(known: {', '.join(sorted(_KNOWN_ARCH))})"
            )
        if arch == "arm64" and variant == "v8":
            variant = ""  # containerd: arm64 and arm64/v8 are the same platform
        if arch == "amd64" and variant == "v1":
            variant = ""
        return cls(os_name, arch, variant)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def to_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out
