"""Refusals of sanctions: a suspended partner's submissions, and operators' lifts."""

from __future__ import annotations

from service.errors import Conflict, Forbidden, NotFound


class PartnerSuspended(Forbidden):
    """The partner is suspended: its jobs tripped hard rules (output rejected by the gate, model
    queries past the budget, submissions refused for an exhausted budget) more often in one UTC day
    than its policy allows. `detail` gives the reason; an operator can lift the suspension."""

    code = "partner_suspended"


class PartnerNotSuspended(Conflict):
    """The partner is not suspended: there is nothing to lift."""

    code = "partner_not_suspended"


class SanctionSubjectNotFound(NotFound):
    """No partner of that name."""

    code = "sanction_subject_not_found"
