"""Names a person probably meant: the registry's answer to a reference that names nothing."""

from __future__ import annotations

import difflib


def closest(name: str, names: list[str], n: int = 3) -> list[str]:
    """The names most like `name` (a typo, another case), best first."""
    by_lower = {x.lower(): x for x in names}
    return [by_lower[x] for x in difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.6)]
