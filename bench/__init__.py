"""Reproducible benchmarks of realtime against reference Socket.IO servers (not installed;
run from the repository root: `python -m bench --help`)."""
