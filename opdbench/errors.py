"""Errors that the user should read: each names the key or the valid choices."""
from __future__ import annotations

import difflib
from typing import Iterable


class ConfigError(ValueError):
    """A bad config value, an unknown name, a duplicate registration."""


def unknown_name_error(kind: str, name: str, valid: Iterable[str], also: dict[str, Iterable[str]] | None = None
                       ) -> ConfigError:
    """``unknown <kind> 'x'. Did you mean 'y'? Valid <kind>s: ...`` (plus, e.g., the
    config's variants under their own heading, from ``also``)."""
    valid = sorted(valid)
    also = {k: sorted(v) for k, v in (also or {}).items() if v}
    candidates = valid + [n for names in also.values() for n in names]
    close = difflib.get_close_matches(str(name), candidates, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    extra = "".join(f"; {k}: {', '.join(v)}" for k, v in also.items())
    return ConfigError(f"unknown {kind} '{name}'.{hint} Valid {kind}s: {', '.join(valid) or '(none)'}{extra}")
