"""Layers: normalised entries → deterministic tar → hashed, compressed blob, in one pass."""
