"""The console's datasets: every dataset version with its status and who used it; a version's page
edits its policy (the same schema, service call and version check as
`PUT /v1/policies/datasets/{name}/{version}`: a form is a PUT with its If-Match in a hidden field),
lists the policy's history, and moves it along its lifecycle. Retiring one with released jobs first
shows those jobs, which could no longer be re-run, and retires it only when the operator confirms
(the same token as `POST /v1/datasets/{name}/{version}/status`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from service.config import Settings
from service.deps import SessionDep
from service.errors import EvalgateError
from service.ingress import form_limit
from service.policies import errors as policy_errors
from service.policies import service as policies
from service.policies.schemas import DatasetPolicyRead, DatasetPolicyUpdate, DatasetPolicyValues
from service.registry import errors as registry_errors
from service.registry import lifecycle
from service.registry import service as registry
from service.site.console.access import in_transaction, operator_form, page_refusal, say, see_other, text
from service.site.console.partners import entry, show
from service.site.problems import PageError
from service.site.rendering import SignedDep, error_page, render
from service.site.sessions import Signed

router = APIRouter(include_in_schema=False)  # under /site/console: endpoints.py includes it

LABELS = {
    "dp_mechanism": "DP mechanism",
    "epsilon_per_metric": "Default ε per metric",
    "max_epsilon_per_metric": "Most ε per metric",
    "epsilon_budget": "ε budget per partner",
    "suppress_below_rows": "Withhold a metric computed on fewer rows than",
    "suppress_below_class_rows": "Withhold a metric with a class smaller than",
    "min_dataset_rows": "Smallest dataset (rows) that takes jobs",
}
MECHANISMS = ("laplace", "gaussian", "none")
DONE = {
    "deprecated": "{} is deprecated: it still takes jobs; partners see its status.",
    "retired": "{} is retired: it takes no new jobs, and its released jobs can no longer be reproduced.",
    "active": "{} is active.",
}
MOVES = {"active": ("deprecated", "retired"), "deprecated": ("retired",), "retired": ()}


def label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " ").capitalize())


# -- the form ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    value: str  # as the input shows it ("" for the default)
    default: str  # what applies when it is left empty
    choices: tuple[str, ...] = ()  # a closed set: a <select>, with "" for the default


@dataclass(frozen=True)
class PolicyForm:
    dataset: str  # name@version
    version: int  # the policy's version this form was filled from: its If-Match
    fields: list[Field]
    reason: str = ""


def form_of(
    settings: Settings, read: DatasetPolicyRead, typed: dict[str, str] | None = None, reason: str = ""
) -> PolicyForm:
    """The form for a dataset version's policy as read, or refilled with what an operator typed."""
    stored, defaults = read.set.model_dump(), policies.dataset_defaults(settings).model_dump()
    fields = [
        Field(
            name,
            label(name),
            entry(stored[name]) if typed is None else typed[name],
            show(defaults[name]),
            MECHANISMS if name == "dp_mechanism" else (),
        )
        for name in DatasetPolicyValues.model_fields
    ]
    return PolicyForm(read.dataset, read.version, fields, reason)


@dataclass(frozen=True)
class Submitted:
    typed: dict[str, str]
    reason: str
    version: int | None


def submitted(form: FormData) -> Submitted:
    typed = {name: text(form, name, 200) for name in DatasetPolicyValues.model_fields}
    raw = text(form, "version", 12)
    return Submitted(typed, text(form, "reason", 2000), int(raw) if raw.isdigit() else None)


def validate(sent: Submitted) -> DatasetPolicyUpdate | list[str]:
    """The API's request body made of the form, or what is wrong with it, said per field."""
    body: dict[str, Any] = {"reason": sent.reason, **{k: v or None for k, v in sent.typed.items()}}
    try:
        return DatasetPolicyUpdate.model_validate(body)
    except ValidationError as e:
        return [f"{label(str(p['loc'][0])) if p['loc'] else 'The form'}: {p['msg']}" for p in e.errors()]


# -- pages ---------------------------------------------------------------------------------------------------


def _no_dataset(ref: str) -> PageError:
    return PageError(
        404, "No such dataset version", f"There is no dataset version {ref}. The datasets page lists them."
    )


@router.get("/datasets", name="console_datasets")
def datasets_page(request: Request, signed: SignedDep, session: SessionDep) -> Response:
    refusal = page_refusal(request, signed)
    if refusal is not None:
        return refusal
    rows = [(d, lifecycle.usage(session, "dataset", d.ref)) for d in registry.dataset_versions(session)]
    return render(request, "console/datasets.html", signed, rows=rows, section="datasets")


def _dataset_page(
    request: Request,
    signed: Signed,
    session: Session,
    ref: str,
    form: PolicyForm | None = None,
    status: int = 200,
    problems: list[str] | None = None,
    notice: str = "",
) -> Response:
    settings = request.app.state.settings
    name, version = registry.parse_ref(ref, "dataset")
    dataset = registry.resolve_dataset(session, ref)
    read = policies.read_dataset(session, settings, name, version)
    return render(
        request,
        "console/dataset.html",
        signed,
        status,
        dataset=dataset,
        rules=read.rules,
        form=form or form_of(settings, read),
        changes=policies.dataset_history(session, name, version),
        usage=lifecycle.usage(session, "dataset", ref),
        moves=MOVES.get(dataset.status, ()),
        problems=problems or [],
        notice=notice,
        label=label,
        show=show,
        section="datasets",
    )


@router.get("/datasets/{name}/{version}", name="console_dataset")
def dataset_page(
    request: Request, name: str, version: str, signed: SignedDep, session: SessionDep, saved: int = 0, done: str = ""
) -> Response:
    refusal = page_refusal(request, signed)
    if refusal is not None:
        return refusal
    assert signed is not None
    ref = f"{name}@{version}"
    notice = DONE[done].format(ref) if done in DONE else ""
    if saved:
        notice = f"Saved. {ref}'s policy applies to the next submission and the next gating on it."
    try:
        return _dataset_page(request, signed, session, ref, notice=notice)
    except (registry_errors.UnknownDatasetVersion, policy_errors.PolicySubjectNotFound):
        return error_page(request, signed, _no_dataset(ref))


@router.post("/datasets/{name}/{version}/policy", openapi_extra=form_limit())
async def change_policy(request: Request, name: str, version: str) -> Response:
    """The form's values replace what is set for the dataset version, if its policy is still at the
    version the form was filled from; a stale form is refused (412) and shows what is there now."""
    checked = await operator_form(request)
    if isinstance(checked, Response):
        return checked
    signed, form = checked
    settings, ref = request.app.state.settings, f"{name}@{version}"
    sent = submitted(form)
    body = validate(sent)

    def apply(session: Session) -> Response | None:
        read = policies.read_dataset(session, settings, name, version)
        if isinstance(body, list):
            shown = form_of(settings, read, sent.typed, sent.reason)
            return _dataset_page(request, signed, session, ref, shown, 422, body)
        values = DatasetPolicyValues.model_validate(body.model_dump(exclude={"reason"}))
        try:
            with session.begin_nested():  # a refused change leaves nothing behind
                policies.set_dataset(
                    session,
                    settings,
                    name,
                    version,
                    values,
                    reason=body.reason,
                    actor=signed.caller.actor,
                    if_match=sent.version,
                )
        except policy_errors.PolicyChanged:
            problem = (
                f"Nothing was saved: another change was made to {ref}'s policy since you opened this form (it is "
                f"now at version {read.version}). Its values are in the form below and the change is at the top "
                "of the history; apply your change to them if it still makes sense."
            )
            return _dataset_page(request, signed, session, ref, form_of(settings, read), 412, [problem])
        except EvalgateError as e:
            shown = form_of(settings, read, sent.typed, sent.reason)
            return _dataset_page(request, signed, session, ref, shown, e.status_code, [say(e)])
        return None

    try:
        answer = await in_transaction(request, apply)
    except policy_errors.PolicySubjectNotFound:
        return error_page(request, signed, _no_dataset(ref))
    return answer if answer is not None else see_other(f"/site/console/datasets/{name}/{version}?saved=1")


@router.post("/datasets/{name}/{version}/status", openapi_extra=form_limit())
async def change_status(request: Request, name: str, version: str) -> Response:
    """Move the dataset version along its lifecycle, as POST /v1/datasets/{name}/{version}/status. A
    retirement that would leave released jobs without a re-run shows them first (409), with a button
    that retires it knowing exactly those."""
    checked = await operator_form(request)
    if isinstance(checked, Response):
        return checked
    signed, form = checked
    ref, status, confirm = f"{name}@{version}", text(form, "status", 16), text(form, "confirm", 64) or None

    def move(session: Session) -> Response | None:
        try:
            with session.begin_nested():
                lifecycle.set_dataset_status(session, ref, status, signed.caller.actor, confirm=confirm)
        except registry_errors.RetirementUnconfirmed as e:
            jobs = [a.removeprefix("job:") for a in e.alternatives if a.startswith("job:")]
            token = next(a.removeprefix("confirm:") for a in e.alternatives if a.startswith("confirm:"))
            usage = lifecycle.usage(session, "dataset", ref)
            return render(
                request,
                "console/retire.html",
                signed,
                409,
                ref=ref,
                name=name,
                version=version,
                jobs=jobs,
                token=token,
                changed=confirm is not None,
                usage=usage,
                section="datasets",
            )
        except (registry_errors.UnknownDatasetVersion, registry_errors.InvalidReference):
            raise
        except EvalgateError as e:
            return _dataset_page(request, signed, session, ref, status=e.status_code, problems=[say(e)])
        return None

    try:
        answer = await in_transaction(request, move)
    except (registry_errors.UnknownDatasetVersion, registry_errors.InvalidReference):
        return error_page(request, signed, _no_dataset(ref))
    return answer if answer is not None else see_other(f"/site/console/datasets/{name}/{version}?done={status}")
