"""``KEY=VALUE`` options on the studies' command lines (``--core-option``, ``--scheduler-option``)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def key_value_options(parser: argparse.ArgumentParser, flag: str, items: list[str]) -> tuple[tuple[str, Any], ...]:
    """``KEY=VALUE`` arguments as pairs; a value is JSON when it parses (numbers, booleans, null), else the text.

    A malformed item is a usage error (``parser.error``: exit 2 before any run).
    """
    pairs = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            parser.error(f"{flag} takes KEY=VALUE, not {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        pairs.append((key.strip(), value))
    return tuple(pairs)
