"""Responses the pages and the API share: the session cookie, an export as a JSON Lines download."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

from fastapi import Request, Response

from rlhfkit.label import export
from rlhfkit.label.deps import COOKIE, LOGIN_COOKIE
from rlhfkit.label.store import SESSION_SECONDS

JSONL = "application/x-ndjson"
LOGIN_SECONDS = 3600  # the invite page's login cookie: its form works this long


def set_session(request: Request, response: Response, token: str) -> None:
    """The session cookie: HttpOnly (scripts never see it), SameSite=Lax, Secure when served over HTTPS
    (`--secure-cookie`); it lives as long as its session."""
    response.set_cookie(COOKIE, token, httponly=True, samesite="lax", secure=request.app.state.secure_cookie,
                        max_age=SESSION_SECONDS, path="/")


def set_login_cookie(request: Request, response: Response, value: str) -> None:
    """The invite page's anti-CSRF cookie: SameSite=Strict, so a form another site posts never carries it."""
    response.set_cookie(LOGIN_COOKIE, value, httponly=True, samesite="strict", secure=request.app.state.secure_cookie,
                        max_age=LOGIN_SECONDS, path="/invite")


def jsonl_response(project: str, fmt: export.Format, rows: list[dict]) -> Response:
    """`rows` (`Store.submissions`) exported in `fmt`, one JSON record a line, as a file download."""
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in export.records(rows, fmt))
    return Response(lines, media_type=JSONL, headers={"Content-Disposition": attachment(f"{project}-{fmt}.jsonl")})


def attachment(filename: str) -> str:
    """A Content-Disposition for any file name (RFC 6266 §4.3): an ASCII `filename` for old clients
    (anything else, quotes and backslashes too, becomes "_"), and the exact name, UTF-8 and
    percent-encoded, as `filename*` (RFC 5987), which browsers prefer. Headers are Latin-1 on the wire:
    a raw "проект" in them is an error, a raw quote ends the name."""
    fallback = re.sub(r'[^\x20-\x7e]|["\\]', "_", filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
