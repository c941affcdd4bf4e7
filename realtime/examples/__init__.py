"""Worked examples of extensions (docs/extensions.md)."""
