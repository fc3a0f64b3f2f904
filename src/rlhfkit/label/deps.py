"""The app's dependencies: the store, the person behind a request, their role, and CSRF.

As in the full-stack FastAPI template, a route names what it needs in its signature
(`person: CurrentUser`, `person: AdminUser`) or in its decorator (`dependencies=[Depends(form_csrf)]`),
and FastAPI resolves it before the route runs; a failure is a `UserError` whose status comes from
`app.ERROR_STATUS` (401 not logged in, 403 wrong role or CSRF token). FastAPI resolves a route's
dependencies in order, the router's first, and each once per request: list `current_user` before a
CSRF check, so that a stranger hears 401 before 403 (docs/design.md §6).

The checks that touch no database are `async def`s: FastAPI runs them on the event loop instead of
sending each through the thread pool; `optional_user` (a database read) is a plain `def` and runs there.

CSRF: every mutation carries a token, an HMAC of the (secret, HttpOnly) session cookie, which another
site cannot read: a form field `csrf_token` on the pages, the `X-CSRF-Token` header on the API. Logging in
is a mutation too (login CSRF: a forged login puts the victim's browser in someone else's session): the
invite page sets a random login cookie (HttpOnly, SameSite=Strict) and its form carries that cookie's HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Cookie, Depends, Header, Path, Request
from starlette.datastructures import FormData

from rlhfkit.errors import UserError
from rlhfkit.label.inputs import MAX_NAME, check_form
from rlhfkit.label.store import Forbidden, Store, Who

COOKIE = "rlhf_session"
LOGIN_COOKIE = "rlhf_login"  # the invite page's anti-CSRF cookie (before there is a session)
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


class Unauthorized(UserError):
    pass


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: HMAC-SHA256 keyed by the (secret) session cookie."""
    return hmac.new(session_token.encode(), b"rlhfkit-csrf", hashlib.sha256).hexdigest()


def verify_csrf(session_token: str | None, sent: str | None) -> None:
    # compare_digest takes bytes or ASCII-only strings; a header may be any Latin-1, a form field any text
    given = str(sent or "").encode("utf-8", "backslashreplace")
    if not given or not hmac.compare_digest(given, csrf_token(session_token or "").encode()):
        raise Forbidden("missing or wrong CSRF token; reload the page")


# ----------------------------------------------------------------------------------- store, session

async def get_store(request: Request) -> Store:
    """The store `create_app` was given (on `app.state`, so routes need no closure over it)."""
    return request.app.state.store


StoreDep = Annotated[Store, Depends(get_store)]


async def session_cookie(
        rlhf_session: Annotated[str | None, Cookie(alias=COOKIE, include_in_schema=False)] = None) -> str | None:
    return rlhf_session


SessionCookie = Annotated[str | None, Depends(session_cookie)]


def optional_user(store: StoreDep, token: SessionCookie) -> Who | None:
    """The person logged in with this cookie, or None (an unknown, expired or missing session)."""
    return store.who(token) if token else None


async def current_user(person: Annotated[Who | None, Depends(optional_user)]) -> Who:
    if person is None:
        raise Unauthorized("not logged in: open your invite link")
    return person


CurrentUser = Annotated[Who, Depends(current_user)]


async def admin_user(person: CurrentUser) -> Who:
    """An admin of their own project (the admin pages show that project)."""
    if not person.is_admin:
        raise Forbidden("this page is for the project's admins")
    return person


AdminUser = Annotated[Who, Depends(admin_user)]


async def project_admin(project: Annotated[str, Path(max_length=MAX_NAME)], person: CurrentUser) -> Who:
    """An admin of the project named in the path (`/api/projects/{project}/...`): admins of another
    project get 403 like labelers."""
    if not person.is_admin or project != person.project:
        raise Forbidden("this page is for the project's admins")
    return person


ProjectAdmin = Annotated[Who, Depends(project_admin)]


# ------------------------------------------------------------------------------------------- CSRF

async def read_form(request: Request) -> FormData:
    """The posted form, read on the event loop (Starlette keeps it for the request), every field Unicode text
    (`inputs.check_form`; 422 naming the field). Routes take it as a dependency so that they can be plain
    `def`s: FastAPI runs those in its thread pool, and their database calls never block the loop."""
    form = await request.form()
    check_form(form)
    return form


PostedForm = Annotated[FormData, Depends(read_form)]


async def form_csrf(token: SessionCookie, form: PostedForm) -> None:
    """A page's form must carry the session's CSRF token in its `csrf_token` field."""
    verify_csrf(token, form.get(CSRF_FIELD))


async def login_cookie(
        rlhf_login: Annotated[str | None, Cookie(alias=LOGIN_COOKIE, include_in_schema=False)] = None) -> str | None:
    return rlhf_login


async def login_csrf(cookie: Annotated[str | None, Depends(login_cookie)], form: PostedForm) -> None:
    """The invite page's form must carry the HMAC of this browser's login cookie: another site can neither
    read that cookie nor (SameSite=Strict) have it sent with a POST it forges."""
    if not cookie:
        raise Forbidden("open your invite link again: this browser has not shown its page yet")
    verify_csrf(cookie, form.get(CSRF_FIELD))


async def header_csrf(token: SessionCookie,
                      sent: Annotated[str | None, Header(alias=CSRF_HEADER, description="`csrf_token` from "
                                                         "POST /api/session")] = None) -> None:
    """An API call that changes something must send the session's CSRF token as `X-CSRF-Token`."""
    verify_csrf(token, sent)
