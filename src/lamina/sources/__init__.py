"""Sources: turn inputs (host files and trees, rootfs tarballs) into layer entries."""
