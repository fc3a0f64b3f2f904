"""The labeling pages: the landing page, invite links, the task page and its form, logout, the API docs.

An invite link (`GET /invite/{token}`) only shows a page saying whom it logs in; its button posts the login
(`POST /invite/{token}`, CSRF-checked against a login cookie the page set). A GET never logs anyone in: an
`<img>` of someone else's link cannot switch a browser's session, and a chat's link preview does not use up
a single-use link.

`/task` renders the labeler's current lease; the form posts to `/task/{assignment_id}` and, under htmx
(`HX-Request`), gets the next item's fragment back instead of a redirect.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from rlhfkit.label.answers import form_to_body, parse_answer
from rlhfkit.label.api_models import MAX_TOKEN
from rlhfkit.label.deps import (
    COOKIE,
    LOGIN_COOKIE,
    CurrentUser,
    PostedForm,
    SessionCookie,
    StoreDep,
    csrf_token,
    current_user,
    form_csrf,
    login_cookie,
    login_csrf,
    optional_user,
)
from rlhfkit.label.inputs import RowId
from rlhfkit.label.responses import set_login_cookie, set_session
from rlhfkit.label.store import NotFound, Store, Who
from rlhfkit.label.templating import render

router = APIRouter(include_in_schema=False)


@router.get("/")
def home(request: Request, person: Annotated[Who | None, Depends(optional_user)]):
    if person is None:
        return render(request, "landing.html", 401)
    return RedirectResponse("/admin" if person.is_admin else "/task", status_code=303)


InviteToken = Annotated[str, Path(max_length=MAX_TOKEN)]


@router.get("/invite/{token}")
def invite_page(request: Request, store: StoreDep, token: InviteToken,
                person: Annotated[Who | None, Depends(optional_user)],
                cookie: Annotated[str | None, Depends(login_cookie)]):
    """Whom the link logs in, and a button that does it; nothing changes until it is pressed."""
    invitee = store.invitee(token)  # 404 unknown, 410 expired or used
    cookie = cookie or secrets.token_urlsafe(32)
    response = render(request, "invite.html", who=person, invitee=invitee, login_csrf=csrf_token(cookie),
                      action=f"/invite/{token}")
    set_login_cookie(request, response, cookie)
    return response


@router.post("/invite/{token}", dependencies=[Depends(login_csrf)])
def accept_invite(request: Request, store: StoreDep, token: InviteToken):
    session = store.login(token)
    if session is None:
        raise NotFound("this invite link is unknown or was replaced by a newer one; ask your admin")
    response = RedirectResponse("/", status_code=303)  # drops the token from the address bar
    set_session(request, response, session)
    response.delete_cookie(LOGIN_COOKIE, path="/invite")
    return response


@router.post("/logout", dependencies=[Depends(form_csrf)])
def logout(store: StoreDep, token: SessionCookie):
    store.logout(token or "")
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def task_page(request: Request, store: Store, person: Who) -> HTMLResponse:
    task = store.next_task(person)
    fragment = bool(request.headers.get("HX-Request"))
    return render(request, "_task.html" if fragment else "task.html", who=person, task=task,
                  client_id=str(uuid.uuid4()), guidelines=store.guidelines(person.project))


@router.get("/task")
def task(request: Request, store: StoreDep, person: CurrentUser):
    if store.guidelines_unread(person):  # before the first item, and again after the admin changes them
        return render(request, "guidelines.html", who=person, guidelines=store.guidelines(person.project))
    if (back := store.sent_back(person)) is not None:  # an answer an admin sent back comes first
        return RedirectResponse(f"/history/{back['submission_id']}/edit", status_code=303)
    return task_page(request, store, person)


@router.get("/guidelines")
def guidelines(request: Request, store: StoreDep, person: CurrentUser):
    return render(request, "guidelines.html", who=person, guidelines=store.guidelines(person.project))


@router.post("/guidelines/read", dependencies=[Depends(current_user), Depends(form_csrf)])
def guidelines_read(store: StoreDep, person: CurrentUser):
    store.guidelines_read(person)
    return RedirectResponse("/task", status_code=303)


@router.post("/task/{assignment_id}", dependencies=[Depends(current_user), Depends(form_csrf)])
def answer(request: Request, store: StoreDep, person: CurrentUser, assignment_id: Annotated[RowId, Path()],
           form: PostedForm):
    turns = store.output_turns(person, assignment_id)
    store.submit(person, assignment_id, parse_answer(form_to_body(form, len(turns)), person.mode, len(turns), turns))
    if request.headers.get("HX-Request"):
        if (back := store.sent_back(person)) is not None:  # htmx follows HX-Redirect with a full page load
            return Response(status_code=200, headers={"HX-Redirect": f"/history/{back['submission_id']}/edit"})
        return task_page(request, store, person)
    return RedirectResponse("/task", status_code=303)


@router.get("/docs")
def docs(request: Request):
    return render(request, "docs.html", api=request.app.openapi())
