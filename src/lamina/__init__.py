"""lamina: lean, reproducible OCI images from files, without a daemon or a Dockerfile."""

__version__ = "0.1.0"
__all__ = ["__version__"]
