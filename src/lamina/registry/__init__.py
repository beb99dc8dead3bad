"""Talking to registries without a daemon: the OCI distribution protocol, auth, transport."""
