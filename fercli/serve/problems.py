"""A request's failure as an HTTP status, a machine-readable code and a one-line message."""

from __future__ import annotations

from typing import Any

from fercli.align.imageio import NOT_AN_IMAGE, ImageProblem


class HTTPProblem(Exception):
    """A request's failure: an HTTP status, a short machine-readable code and a one-line message."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


def image_problem(exc: ImageProblem) -> HTTPProblem:
    """An undecodable upload's status: too many pixels 413, not an image 415, damaged or empty 422."""
    if exc.status == "too_large":  # the limit is the server's: say which option sets it
        return HTTPProblem(413, "too_many_pixels", f"{exc.reason} (raise it with the server's --max-megapixels)")
    if exc.reason == NOT_AN_IMAGE:
        return HTTPProblem(415, "not_an_image", exc.reason)
    return HTTPProblem(422, "unreadable_image", exc.reason)
