from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.quotas.service import Budgets


async def get_budgets(request: Request) -> Budgets:
    """The app's one Budgets object, built at start-up."""
    return request.app.state.budgets  # type: ignore[no-any-return]


BudgetsDep = Annotated[Budgets, Depends(get_budgets)]
