"""C2SP signed notes (c2sp.org/signed-note) and checkpoints (c2sp.org/tlog-checkpoint), Ed25519.

A checkpoint is a note whose text is three lines: the log's origin, its size in decimal, and its
root hash in standard base64. A note is its text, a blank line, and one line per signature:
"— <key name> <base64(key hash ‖ signature)>", where the key hash is the first 4 bytes of
SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key) and the signature is Ed25519 over the text. The key name
of a checkpoint's signature is the log's origin. Nothing here needs a database or settings:
`evalgate verify` uses it offline.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ED25519 = b"\x01"  # the signed-note signature type of Ed25519
DASH = "\u2014"  # the em dash that starts a signature line


class NoteError(ValueError):
    """A note or checkpoint that cannot be read or whose signature does not verify."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


def valid_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_hash(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public_key).digest()[:4]


def verifier_key(name: str, public_key: bytes) -> str:
    """The note verifier key string: <name>+<key hash, hex>+<base64(type ‖ key)>."""
    return f"{name}+{key_hash(name, public_key).hex()}+{base64.b64encode(ED25519 + public_key).decode()}"


def parse_verifier_key(vkey: str) -> tuple[str, bytes]:
    """(name, raw Ed25519 public key) of a verifier key string."""
    name, _, rest = vkey.strip().partition("+")
    hash_hex, _, key_b64 = rest.partition("+")
    try:
        raw = base64.b64decode(key_b64, validate=True)
    except binascii.Error:
        raise NoteError("the verifier key's key is not base64") from None
    if not valid_name(name) or raw[:1] != ED25519 or len(raw) != 33:
        raise NoteError("not an Ed25519 note verifier key (<name>+<hash>+<base64 key>)")
    if key_hash(name, raw[1:]).hex() != hash_hex.lower():
        raise NoteError("the verifier key's hash does not match its name and key")
    return name, raw[1:]


def sign(text: str, name: str, public_key: bytes, sign_bytes: Callable[[bytes], bytes]) -> str:
    """The note of `text` with one signature by the key named `name`."""
    if not text.endswith("\n") or "\n\n" in text or not valid_name(name):
        raise NoteError("a note's text ends with one newline and has no blank line; a key name has no space or +")
    signature = key_hash(name, public_key) + sign_bytes(text.encode())
    return f"{text}\n{DASH} {name} {base64.b64encode(signature).decode()}\n"


def open_note(note: str, name: str, public_key: bytes) -> str:
    """The text of `note` if a signature by the key (`name`, `public_key`) verifies; NoteError else."""
    text, sep, signatures = note.partition("\n\n")
    if not sep or not signatures.endswith("\n"):
        raise NoteError("not a signed note: no blank line before the signatures, or no final newline")
    text += "\n"
    wanted = key_hash(name, public_key)
    key = Ed25519PublicKey.from_public_bytes(public_key)
    found_name = False
    for line in signatures[:-1].split("\n"):
        dash, _, rest = line.partition(" ")
        signer, _, sig_b64 = rest.partition(" ")
        if dash != DASH or not signer or not sig_b64:
            raise NoteError(f"not a signature line: {line[:80]!r}")
        if signer != name:
            continue
        found_name = True
        try:
            raw = base64.b64decode(sig_b64, validate=True)
        except binascii.Error:
            raise NoteError("a signature is not base64") from None
        if raw[:4] != wanted:
            continue
        try:
            key.verify(raw[4:], text.encode())
            return text
        except InvalidSignature:
            raise NoteError(f"the signature by {name} does not verify: the note was altered") from None
    if found_name:
        raise NoteError(f"the note is signed by {name}, but with another key")
    raise NoteError(f"the note carries no signature by {name}")


def parse_checkpoint(text: str) -> Checkpoint:
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("a checkpoint has an origin, a size and a root hash, one a line")
    origin, size, root_b64 = lines[0], lines[1], lines[2]
    if not size.isdigit() or (size != "0" and size.startswith("0")):
        raise NoteError(f"the checkpoint's size {size[:40]!r} is not a decimal number")
    try:
        root = base64.b64decode(root_b64, validate=True)
    except binascii.Error:
        raise NoteError("the checkpoint's root hash is not base64") from None
    if len(root) != 32 or not origin:
        raise NoteError("the checkpoint's root hash is not 32 bytes, or its origin is empty")
    return Checkpoint(origin, int(size), root)


def checkpoint_origin(note: str) -> str:
    """The origin line of a note, unverified (which key to check it with)."""
    return note.split("\n", 1)[0]


def open_checkpoint(note: str, public_key: bytes, origin: str | None = None) -> Checkpoint:
    """The checkpoint, if signed by `public_key` under its origin (and that is `origin`, if given)."""
    name = origin or checkpoint_origin(note)
    checkpoint = parse_checkpoint(open_note(note, name, public_key))
    if checkpoint.origin != name:
        raise NoteError(f"the checkpoint's origin is {checkpoint.origin!r}, not {name!r}")
    return checkpoint
