"""The API's side of observability: each request as a unit of work in the logs, its latency by route
template, and `GET /metrics` for operators.

Two middlewares (main.py): `RequestObserved` sits inside `RequestIds` and outside ingress, so it
times and logs every answer, ingress's refusals (401, 413, 429) included, under the request's id;
`CallerObserved` sits inside ingress and adds who called, once ingress has authenticated them. The
route label is the route's template (`/v1/jobs/{job_id}`), never the raw path, so a caller cannot
mint label values; a path no route matches is `unmatched`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, Response
from fastapi.routing import iter_route_contexts
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth.dependencies import CALLER_STATE, Operator
from service.auth.roles import Role
from service.auth.service import Caller
from service.deps import SessionDep
from service.observability import logs
from service.observability.gauges import DatabaseGauges
from service.observability.metrics import HTTP_LATENCY
from service.quotas.dependencies import BudgetsDep

log = logging.getLogger("evalgate.http")
UNMATCHED = "unmatched"
# A label takes values from closed sets only, or a caller could mint series without end (memory).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope) -> str:
    """The template of the route that served (or would have served) the request."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:  # refused before routing (ingress): the route the router would have picked
        router = getattr(scope.get("app"), "router", None)
        for candidate in iter_route_contexts(getattr(router, "routes", [])):
            if candidate.matches(scope)[0] is Match.FULL:
                path = candidate.path
                break
    return str(path or UNMATCHED)


class RequestObserved:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = (scope.get("state") or {}).get("request_id")
        status = 500  # unless an answer starts: RequestIds turns an escaped exception into a 500
        started = time.perf_counter()

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with logs.scope(request_id=request_id):
            try:
                await self.app(scope, receive, send_observed)
            finally:
                seconds = time.perf_counter() - started
                route, method = route_template(scope), str(scope.get("method", ""))
                method = method if method in METHODS else "other"
                HTTP_LATENCY.labels(method=method, route=route, status=str(status)).observe(seconds)
                job_id = (scope.get("path_params") or {}).get("job_id")
                log.info(
                    "%s %s %d",
                    method,
                    route,
                    status,
                    extra={"status": status, "duration_ms": round(seconds * 1000, 1), **_job(job_id)},
                )


def _job(job_id: Any) -> dict[str, str]:
    """The job a route's path names, unless the request already bound it (it then knows it exists)."""
    return {"job_id": str(job_id)} if job_id and "job_id" not in logs.current() else {}


class CallerObserved:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        caller = (scope.get("state") or {}).get(CALLER_STATE)
        if isinstance(caller, Caller):
            bind_caller(caller)
        await self.app(scope, receive, send)


def bind_caller(caller: Caller) -> None:
    logs.bind(principal=caller.name, role=caller.role, partner=caller.name if caller.role == Role.PARTNER else None)


router = APIRouter(tags=["meta"])
# Text format 0.0.4 (CONTENT_TYPE): what Prometheus 2 and 3 both read; these names need nothing newer.


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}}}},
)
def read_metrics(caller: Operator, session: SessionDep, budgets: BudgetsDep) -> Response:
    """Prometheus metrics: this API process's, and the queue and each partner's budgets (operators)."""
    gauges = CollectorRegistry(auto_describe=False)
    gauges.register(DatabaseGauges(session, lambda name: budgets.limits(name, session)))
    return Response(generate_latest(REGISTRY) + generate_latest(gauges), media_type=CONTENT_TYPE)
