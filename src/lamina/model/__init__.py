"""The OCI data model: frozen attrs classes and their canonical JSON bytes, with no I/O."""

from lamina.model.config import ConfigFile, ContainerConfig, HistoryEntry
from lamina.model.descriptor import Descriptor
from lamina.model.digest import Digest
from lamina.model.layer import Layer
from lamina.model.manifest import Index, Manifest
from lamina.model.platform import Platform
from lamina.model.reference import Reference

__all__ = [
    "ConfigFile",
    "ContainerConfig",
    "Descriptor",
    "Digest",
    "HistoryEntry",
    "Index",
    "Layer",
    "Manifest",
    "Platform",
    "Reference",
]
