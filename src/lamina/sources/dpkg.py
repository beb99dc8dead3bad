"""Where dpkg's records live in an image: a leaf, so that lint, the SBOM and package layers can
look for them without importing the Debian package reader (sources.deb) on images that have none."""

from __future__ import annotations

import posixpath

STATUS = "var/lib/dpkg/status"  # dpkg's own database: every installed package's stanza
STATUS_DIR = "var/lib/dpkg/status.d"  # distroless: one stanza file per package (what sources.deb writes)


def is_status(path: str) -> bool:
    """dpkg's status file, or one of distroless's status.d stanzas."""
    return path == STATUS or posixpath.dirname(path) == STATUS_DIR
