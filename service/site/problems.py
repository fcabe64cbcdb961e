"""A page that cannot be shown, said for a person (rendered by endpoints.error_page)."""

from __future__ import annotations


class PageError(Exception):
    def __init__(self, status: int, title: str, message: str):
        super().__init__(message)
        self.status, self.title, self.message = status, title, message
