"""A path inside a suite bundle: what a member's name may be, and how a name is shown in a message.

A name is bytes that must decode as UTF-8 (tar hands undecodable bytes over surrogate-escaped). Errors
show a member's name escaped and cut short (`show`), so no control character or undecodable byte
reaches a log or a terminal raw.
"""

from __future__ import annotations

import re
import unicodedata

from service.registry import errors

SHOW_MAX = 80  # characters of a member's name shown in an error
# Unicode categories refused in names: controls (C0, DEL, C1), invisible format characters such as
# bidirectional overrides, and line and paragraph separators.
INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})


def show(name: str | bytes, *, escape_all: bool = False) -> str:
    """A member's name for a message: quoted and escaped as repr does (as ascii does with
    `escape_all`), so no control character or undecodable byte reaches a log or a terminal raw; a
    long name keeps its start and its end, about SHOW_MAX characters in all."""
    if isinstance(name, bytes):
        raw = name
    else:
        try:
            raw = name.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = name.encode("utf-8", "backslashreplace")
    text: str | bytes
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw  # shown as b'...\xff...'
    quote = ascii if escape_all else repr
    if len(quote(text)) <= SHOW_MAX:
        return quote(text)
    keep = SHOW_MAX // 2
    while keep > 1 and len(quote(text[:keep])) + len(quote(text[-keep:])) > SHOW_MAX - 3:
        keep -= 1
    return f"{quote(text[:keep])}...{quote(text[-keep:])}"


def clean_name(name: str, *, is_dir: bool = False) -> str | None:
    """The member's path inside the bundle, or None for a directory entry naming the archive's own
    root (`.`). Refused: names that are not UTF-8 or hold a NUL, a backslash or a control character;
    absolute paths; `..`; empty or `.` components (a single leading `./`, as `tar -C dir .` writes,
    is dropped). A directory may end with one `/`, as zip directories do."""
    shown = show(name)
    try:
        text = name.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:  # tar hands over undecodable bytes surrogate-escaped
        raise errors.BundleNameNotUtf8(f"member name {shown} is not UTF-8") from None
    if not text or "\x00" in text or "\\" in text:
        raise errors.BundleBadPath(f"bad member name {shown}")
    if any(unicodedata.category(c) in INVISIBLE for c in text):
        raise errors.BundleNameControlCharacter(f"member name {shown} holds a control character")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise errors.BundleAbsolutePath(f"absolute path {shown} in bundle")
    if is_dir and text in (".", "./"):
        return None
    if is_dir and text.endswith("/"):
        text = text[:-1]
    parts = text.removeprefix("./").split("/")
    if ".." in parts:
        raise errors.BundlePathTraversal(f"path {shown} leaves the bundle")
    if "" in parts or "." in parts:
        raise errors.BundleNonCanonicalPath(f"path {shown} has an empty or '.' component")
    return "/".join(parts)
