"""Fuzzing the remote-write decoder and the whole write path (see tests/fuzz/README.md)."""
