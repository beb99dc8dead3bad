"""Sinks: write a finished image somewhere (tarball, OCI layout directory, metadata file)."""
