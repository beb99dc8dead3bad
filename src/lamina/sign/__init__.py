"""Signing and verifying images that live in a registry.

``simple``: the containers/image "simple signing" format (an OpenPGP-signed ``atomic
container signature`` payload in a lookaside directory) that skopeo, podman and CRI-O
check under a ``signedBy`` policy. ``gpg``: the one place lamina runs the ``gpg`` binary.
``target``: which manifest digest a reference names, asked of the registry.

Signatures never go into a tarball or layout: their bytes change on every run (signing
time, random nonces), and image outputs must stay reproducible.
"""
