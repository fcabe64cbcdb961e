"""DSSE envelopes (github.com/secure-systems-lab/dsse, protocol v1) around in-toto Statements v1.

The signature is Ed25519 over PAE(payloadType, payload):
"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, lengths in ASCII decimal bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from service.canonical import canonical_json

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"


class EnvelopeError(ValueError):
    """An envelope that cannot be read or whose signature does not verify."""


def pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def seal(statement: dict[str, Any], key_id: str, sign_bytes: Callable[[bytes], bytes]) -> dict[str, Any]:
    """The envelope of one statement, signed once."""
    payload = canonical_json(statement).encode()
    signature = sign_bytes(pae(PAYLOAD_TYPE, payload))
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": key_id, "sig": base64.b64encode(signature).decode()}],
    }


def payload_of(envelope: dict[str, Any]) -> bytes:
    try:
        return base64.b64decode(envelope["payload"], validate=True)
    except (KeyError, TypeError, binascii.Error):
        raise EnvelopeError("the envelope's payload is missing or not base64") from None


def open_envelope(envelope: dict[str, Any], public_key: bytes) -> dict[str, Any]:
    """The statement, if one of the envelope's signatures verifies under `public_key`."""
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise EnvelopeError(f"the payload type is {envelope.get('payloadType')!r}, not {PAYLOAD_TYPE}")
    payload = payload_of(envelope)
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise EnvelopeError("the envelope carries no signature")
    key = Ed25519PublicKey.from_public_bytes(public_key)
    message = pae(PAYLOAD_TYPE, payload)
    for s in signatures:
        try:
            key.verify(base64.b64decode(s["sig"], validate=True), message)
        except (InvalidSignature, KeyError, TypeError, binascii.Error):
            continue
        try:
            statement = json.loads(payload)
        except ValueError:
            raise EnvelopeError("the signed payload is not JSON") from None
        if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
            raise EnvelopeError(f"the signed payload is not an in-toto Statement ({STATEMENT_TYPE})")
        return statement
    raise EnvelopeError("no signature on the envelope verifies with this key: the statement or signature was altered")
