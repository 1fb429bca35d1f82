"""Who may call the API: loopback binds need no key; any other bind needs one, compared in constant time.

Light: :class:`fercli.serve.config.ServeConfig` checks its host with :func:`is_loopback` before anything loads."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping

API_KEY_ENV = "FER_API_KEY"
LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_api_key(headers: Mapping[str, str], key: bytes | None) -> None:
    """Raise a 401 :class:`HTTPProblem` unless ``headers`` carry ``key`` (``X-API-Key`` or
    ``Authorization: Bearer``); no key configured: everyone may call."""
    from fercli.serve.problems import HTTPProblem  # OpenCV (image problems): not needed by ServeConfig's checks

    if key is None:
        return
    given = headers.get("x-api-key")
    auth = headers.get("authorization", "")
    if given is None and auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    # Constant time: how much of a key matched must not show in the response time.
    if given is None or not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), key):
        raise HTTPProblem(401, "unauthorized", "a valid API key is required (X-API-Key or Authorization: Bearer)")
