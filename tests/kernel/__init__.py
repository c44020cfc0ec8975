"""Kernel reference harness: kemu's topology built from real Linux network namespaces."""
