"""Errors that the user should read: each names the key or the valid choices."""
from __future__ import annotations

import difflib
from typing import Iterable


class ConfigError(ValueError):
    """A bad config value, an unknown name, a duplicate registration."""


def unknown_name_error(kind: str, name: str, valid: Iterable[str]) -> ConfigError:
    valid = sorted(valid)
    close = difflib.get_close_matches(str(name), valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown {kind} '{name}'.{hint} Valid {kind}s: {', '.join(valid) or '(none)'}")
