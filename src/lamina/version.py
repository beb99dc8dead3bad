"""lamina's version: one home, imported by the CLI, the SBOM and the package."""

__version__ = "0.1.0"
