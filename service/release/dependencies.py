from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.release.signing import Signer


async def get_signer(request: Request) -> Signer:
    """The app's attestation key, loaded at start-up."""
    return request.app.state.signer  # type: ignore[no-any-return]


SignerDep = Annotated[Signer, Depends(get_signer)]
