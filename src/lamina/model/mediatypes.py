"""Media types lamina reads and writes (OCI image spec v1.1, Docker schema 2)."""

from __future__ import annotations

OCI_LAYOUT_VERSION = "1.0.0"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

LAYER_TYPES = frozenset(
    {OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, DOCKER_LAYER_GZIP, "application/vnd.docker.image.rootfs.diff.tar"}
)
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})

EMPTY = "application/vnd.oci.empty.v1+json"  # image-spec manifest.md: the config of an artifact

# Annotation keys (OCI image spec, annotations.md; containerd for the image name).
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_IMAGE_NAME = "io.containerd.image.name"
CREATED = "org.opencontainers.image.created"
# lamina's own: which compressor, at which version and settings, made a layer's bytes.
COMPRESSOR = "dev.lamina.layer.compressor"
# lamina's own: marks, in index.json, the artifacts lamina attaches (an SBOM, provenance), not images.
ARTIFACT_TYPE = "org.opencontainers.image.artifactType"
