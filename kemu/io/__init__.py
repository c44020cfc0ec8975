"""Capture reading and writing, flow logs: kemu's I/O layer."""
