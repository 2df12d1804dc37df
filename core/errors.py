"""The one error type of the API and its JSON envelope.

Every error a client sees, from the core or from any plugin, is
``{"errors": [{"code": "...", "title": "...", "detail": "..."}]}`` with the right status code.
Routes raise :class:`ApiError`; the handlers installed by :mod:`rport.core.api.app` render it.
"""

from __future__ import annotations

from typing import Iterable

import attrs


@attrs.frozen
class ErrorItem:
    """One entry of the ``errors`` list. All keys are always present (RPort's shape)."""

    title: str
    code: str = ""
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "title": self.title, "detail": self.detail}


class ApiError(Exception):
    """An error with an HTTP status, rendered in the standard envelope.

    ``ApiError(404, "client with id \\"x\\" not found")`` or, for validation that found several
    problems, ``ApiError.many(400, [ErrorItem(...), ...])``.
    """

    def __init__(self, status: int, title: str, *, code: str = "", detail: str = "",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(title)
        self.status = status
        self.items: list[ErrorItem] = [ErrorItem(title=title, code=code, detail=detail)]
        self.headers = headers or {}

    @classmethod
    def many(cls, status: int, items: Iterable[ErrorItem]) -> "ApiError":
        items = list(items)
        err = cls(status, items[0].title, code=items[0].code, detail=items[0].detail)
        err.items = items
        return err

    def to_json(self) -> dict:
        return {"errors": [item.to_json() for item in self.items]}


def bad_request(title: str, *, code: str = "", detail: str = "") -> ApiError:
    return ApiError(400, title, code=code, detail=detail)


def not_found(title: str, *, code: str = "", detail: str = "") -> ApiError:
    return ApiError(404, title, code=code, detail=detail)
