"""SPDX 2.3 software bills of materials: every file of the image with its digests, and the
Go modules recorded in Go binaries' build info. Deterministic: the document's namespace and
creation time come from the image digest and the build's epoch.

With ``--sbom-attach`` the document also becomes an OCI artifact (image-spec manifest.md,
``artifactType`` and ``subject``) that refers to the image, in the layout and on push.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from collections.abc import Callable
from typing import Any, BinaryIO

import attrs

from lamina.layers.entries import display
from lamina.version import __version__
from lamina.elf import go_modules
from lamina.image import Attachment, Image, attachment
from lamina.model import canonical
from lamina.model.config import rfc3339
from lamina.sources.rootfs import MergedFS, Origin

SPDX_MEDIA_TYPE = "application/spdx+json"
_GO_MAGIC = b"\xff Go buildinf:"


@attrs.frozen
class _File:
    sha1: str
    sha256: str
    go: list[tuple[str, str]] | None


def _filesystem(openers: list[Callable[[], BinaryIO]], status: dict[str, bytes] | None = None) -> dict[str, _File]:
    """Every regular file of the merged filesystem (rootfs.MergedFS: whiteouts applied,
    hardlinks included) with its digests, in one pass over the layers; ``status`` receives
    the contents of dpkg's status files (sources.packages.is_status)."""
    from lamina.sources.dpkg import is_status
    from lamina.sources.packages import STATUS_CAP

    hashed: dict[Origin, _File] = {}
    texts: dict[Origin, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="lamina-sbom-") as spool:

        def visit(index: int, path: str, member: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
            if member.isfile():  # a later member of the same name replaces it, as in the filesystem
                src = archive.extractfile(member)
                if status is not None and src is not None and is_status(path) and member.size <= STATUS_CAP:
                    texts[(index, member.name)] = src.read()
                    src = io.BytesIO(texts[(index, member.name)])
                hashed[(index, member.name)] = _hash(src, spool)  # type: ignore[arg-type]

        fs = MergedFS.read("image", openers, visit)
    files = fs.files()
    if status is not None:
        status.update((path, texts[node.data]) for path, node in files.items() if node.data in texts)
    return {path: hashed[node.data] for path, node in files.items() if node.data is not None}


def _hash(data: BinaryIO, spool: str) -> _File:
    """Both digests in one pass; an ELF file is also copied to the spool, to read Go build info."""
    sha1, sha256 = hashlib.sha1(), hashlib.sha256()
    copy: BinaryIO | None = None
    go = False
    tail = b""
    first = True
    try:
        while chunk := data.read(1 << 20):
            sha1.update(chunk)
            sha256.update(chunk)
            if first and chunk.startswith(b"\x7fELF"):
                copy = tempfile.NamedTemporaryFile(dir=spool, delete=False)  # type: ignore[assignment]
            first = False
            if copy is not None:
                copy.write(chunk)
                go = go or _GO_MAGIC in tail + chunk
                tail = chunk[-16:]
        modules = None
        if copy is not None:
            copy.close()
            if go:
                modules = go_modules(copy.name)
    finally:
        if copy is not None:
            os.unlink(copy.name)
    return _File(sha1.hexdigest(), sha256.hexdigest(), modules)


def document(image: Image, name: str, openers: list[Callable[[], BinaryIO]], epoch: int,
             debs: tuple[Any, ...] = ()) -> bytes:
    """``debs``: the Debian packages the build installed (sources.apt.Locked), for their checksums."""
    status: dict[str, bytes] = {}
    files = _filesystem(openers, status)
    packages: list[dict[str, Any]] = [{
        "SPDXID": "SPDXRef-Image",
        "name": name,
        "versionInfo": str(image.digest),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": True,
        # SPDX 2.3 §7.9: sha1 over the sorted sha1s of the package's files
        "packageVerificationCode": {"packageVerificationCodeValue": hashlib.sha1(
            "".join(sorted(f.sha1 for f in files.values())).encode()).hexdigest()},
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": image.digest.hex}],
    }]
    relationships = [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": "SPDXRef-Image"}]
    spdx_files = []
    modules: dict[tuple[str, str], str] = {}
    for n, (path, f) in enumerate(sorted(files.items())):
        file_id = f"SPDXRef-File-{n}"
        spdx_files.append({"SPDXID": file_id, "fileName": f"./{display(path)}", "checksums": [
            {"algorithm": "SHA1", "checksumValue": f.sha1}, {"algorithm": "SHA256", "checksumValue": f.sha256}]})
        relationships.append({"spdxElementId": "SPDXRef-Image", "relationshipType": "CONTAINS", "relatedSpdxElement": file_id})
        for module in f.go or []:
            if module not in modules:
                modules[module] = f"SPDXRef-GoModule-{len(modules)}"
                package: dict[str, Any] = {"SPDXID": modules[module], "name": module[0], "versionInfo": module[1],
                                           "downloadLocation": "NOASSERTION", "filesAnalyzed": False}
                if not module[1].startswith("("):  # "(devel)": the main module has no released version
                    package["externalRefs"] = [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                                                "referenceLocator": f"pkg:golang/{module[0]}@{module[1]}"}]
                packages.append(package)
            relationships.append({"spdxElementId": file_id, "relationshipType": "CONTAINS", "relatedSpdxElement": modules[module]})
    from lamina.sources.packages import spdx_packages

    for package in spdx_packages(status, debs):
        packages.append(package)
        relationships.append({"spdxElementId": "SPDXRef-Image", "relationshipType": "CONTAINS",
                              "relatedSpdxElement": str(package["SPDXID"])})
    doc = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": f"https://lamina.invalid/spdx/{image.digest.hex}",
        "creationInfo": {"created": rfc3339(epoch), "creators": [f"Tool: lamina-{__version__}"]},
        "packages": packages,
        "files": spdx_files,
        "relationships": relationships,
    }
    return canonical.dumps(doc)


def artifact(image: Image, sbom: bytes) -> Attachment:
    """The SBOM as an OCI artifact whose subject is the image's manifest."""
    return attachment(image.manifest_descriptor, SPDX_MEDIA_TYPE, sbom)


__all__ = ["artifact", "document"]
