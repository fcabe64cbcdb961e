"""Errors of the transparency log and of attestations."""

from __future__ import annotations

from service.errors import NotFound, Unprocessable


class LogRangeInvalid(Unprocessable):
    """The index, sizes or range asked for do not fit the log as it is now: an index below the tree
    size, a tree size at most the log's, an old size at most the new, a range of at most 1000
    entries; `alternatives` gives the log's size."""

    code = "log_range_invalid"


class AttestationNotFound(NotFound):
    """The job has no release the caller may see, or it was released before the transparency log
    existed and has no attestation."""

    code = "attestation_not_found"
