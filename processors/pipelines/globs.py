"""Topic globs (`metrics.*`, a list of them) as one compiled pattern (pure)."""

from __future__ import annotations

import fnmatch
import re


def glob_pattern(globs: tuple[str, ...]) -> re.Pattern[str]:
    """A pattern that matches a topic any of `globs` matches (fnmatch rules)."""
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))
