"""The labeling pages: the landing page, invite links, the task page and its form, logout, the API docs.

`/task` renders the labeler's current lease; the form posts to `/task/{assignment_id}` and, under htmx
(`HX-Request`), gets the next item's fragment back instead of a redirect.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from rlhfkit.label.answers import form_to_body, parse_answer
from rlhfkit.label.api_models import MAX_TOKEN
from rlhfkit.label.deps import (
    COOKIE,
    CurrentUser,
    PostedForm,
    SessionCookie,
    StoreDep,
    current_user,
    form_csrf,
    optional_user,
)
from rlhfkit.label.inputs import RowId
from rlhfkit.label.responses import set_session
from rlhfkit.label.store import NotFound, Store, Who
from rlhfkit.label.templating import render

router = APIRouter(include_in_schema=False)


@router.get("/")
def home(request: Request, person: Annotated[Who | None, Depends(optional_user)]):
    if person is None:
        return render(request, "landing.html", 401)
    return RedirectResponse("/admin" if person.is_admin else "/task", status_code=303)


@router.get("/invite/{token}")
def accept_invite(request: Request, store: StoreDep, token: Annotated[str, Path(max_length=MAX_TOKEN)]):
    session = store.login(token)
    if session is None:
        raise NotFound("this invite link is unknown or was replaced by a newer one; ask your admin")
    response = RedirectResponse("/", status_code=303)  # drops the token from the address bar
    set_session(request, response, session)
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
    k = store.output_count(person, assignment_id)
    store.submit(person, assignment_id, parse_answer(form_to_body(form, k), person.mode, k))
    if request.headers.get("HX-Request"):
        if (back := store.sent_back(person)) is not None:  # htmx follows HX-Redirect with a full page load
            return Response(status_code=200, headers={"HX-Redirect": f"/history/{back['submission_id']}/edit"})
        return task_page(request, store, person)
    return RedirectResponse("/task", status_code=303)


@router.get("/docs")
def docs(request: Request):
    return render(request, "docs.html", api=request.app.openapi())
