"""The one exception tree of lamina; every message is written for the user.

    LaminaError                 exit 1 unless said otherwise
    ├── UsageError              exit 2: a flag, a spec key or a value is malformed
    │   ├── SpecError           the TOML spec file (names the file and the key)
    │   └── ParseError          a model parser (digest, platform, reference, descriptor, config)
    │                           refused a value; readers re-raise it naming the file
    ├── InputError              an input cannot be read or is not what it claims
    │   ├── UnsafePathError     an entry would land outside the image root
    │   └── DigestMismatch      bytes do not hash to the digest they were named by
    ├── ImageError              an image given to lamina is not one it can read
    ├── OutputError             an output cannot be written
    ├── LintError               lint found errors in the image being built
    ├── RegistryError           a registry refused, failed, misbehaved or could not be reached
    └── AuthError               registry credentials are missing, wrong, or may not be sent

Only ``cli.py`` maps these to ``lamina: error: ...`` and an exit status.
"""

from __future__ import annotations


class LaminaError(Exception):
    """Base of every error lamina reports to its user."""

    exit_code = 1


class UsageError(LaminaError):
    """A malformed flag, spec key or value: the command line itself is wrong."""

    exit_code = 2


class SpecError(UsageError):
    """The spec file is malformed; the message names the file and the key."""

    def __init__(self, path: str, key: str, message: str) -> None:
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {message}")
        self.path = path
        self.key = key


class ParseError(UsageError):
    """A model parser refused a value. On the command line that is a usage error; a reader
    that met it in someone's file re-raises it as an ImageError naming the file."""


class InputError(LaminaError):
    """An input file, tree or tarball cannot be read or is not usable."""


class UnsafePathError(InputError):
    """A path would escape the image root."""


class DigestMismatch(InputError):
    """Bytes that do not hash to the digest that named them."""


class ImageError(LaminaError):
    """An image (tarball or layout) that lamina cannot read."""


class OutputError(LaminaError):
    """An output file or directory cannot be written."""


class LintError(LaminaError):
    """The image would break at run time (lint errors); the findings were printed first."""


class RegistryError(LaminaError):
    """The registry refused, failed, answered something malformed, or could not be reached."""


class AuthError(LaminaError):
    """Credentials are missing or wrong, a helper failed, or sending them would leak them."""
