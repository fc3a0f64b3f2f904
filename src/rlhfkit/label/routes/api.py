"""The JSON API under `/api`: what the pages do, for scripts and simulated labelers.

Log in with `POST /api/session` (an invite token); the reply's `csrf_token` goes into the
`X-CSRF-Token` header of every later POST. Errors are `{"detail": "..."}` (the `Error` model).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from rlhfkit.label.answers import parse_answer
from rlhfkit.label.api_models import (
    Error,
    GuidelinesIn,
    GuidelinesOut,
    LoginIn,
    Me,
    NextOut,
    ReceiptOut,
    SentBackOut,
    SessionOut,
    Stats,
    SubmissionIn,
    TaskOut,
)
from rlhfkit.label.configs import Format
from rlhfkit.label.deps import CurrentUser, ProjectAdmin, StoreDep, Unauthorized, csrf_token, current_user, header_csrf
from rlhfkit.label.guidelines import render_markdown
from rlhfkit.label.responses import JSONL, jsonl_response, set_session
from rlhfkit.label.stats import project_stats

ERRORS = {401: {"model": Error, "description": "not logged in"},
          403: {"model": Error, "description": "wrong role, or a missing or wrong CSRF token"},
          507: {"model": Error, "description": "the database's disk is full; nothing was stored"}}

router = APIRouter(prefix="/api", responses=ERRORS)
session = APIRouter(tags=["session"])
# Labeling changes the database (a lease, an answer): logged in (401) first, then the CSRF header (403).
labeling = APIRouter(tags=["labeling"], dependencies=[Depends(current_user), Depends(header_csrf)])
admin = APIRouter(prefix="/projects/{project}", tags=["admin"])


@session.post("/session", summary="Log in with an invite token")
def api_login(request: Request, response: Response, store: StoreDep, body: LoginIn) -> SessionOut:
    token = store.login(body.token)
    if token is None:
        raise Unauthorized("unknown invite token")
    set_session(request, response, token)
    return SessionOut(**Me.of(store.who(token)).model_dump(), csrf_token=csrf_token(token))


@session.get("/me", summary="Who is logged in")
def api_me(person: CurrentUser) -> Me:
    return Me.of(person)


@session.get("/guidelines", summary="The guidelines of my project")
def api_guidelines(store: StoreDep, person: CurrentUser) -> GuidelinesOut:
    return guidelines_out(store, person.project)


def guidelines_out(store, project: str) -> GuidelinesOut:
    text = store.guidelines(project)
    return GuidelinesOut(project=project, markdown=text, html=str(render_markdown(text)))


@labeling.post("/next", summary="Lease the next item (or get the current lease); a sent-back answer comes first")
def api_next(store: StoreDep, person: CurrentUser) -> NextOut:
    if (back := store.sent_back(person)) is not None:  # as /task redirects to its edit page
        return NextOut(task=None, sent_back=SentBackOut(**back))
    lease = store.next_task(person, with_draft=False)  # TaskOut carries no draft: the lease records it hidden
    return NextOut(task=TaskOut.of(lease) if lease is not None else None)


@labeling.post("/submissions", status_code=201,
               summary="Answer a leased item; resending the same client_id stores it once (200)",
               responses={200: {"model": ReceiptOut, "description": "a resend: the first receipt, `duplicate` true"},
                          404: {"model": Error, "description": "no such assignment of this labeler"},
                          409: {"model": Error, "description": "answered already, or the lease expired and "
                                                               "others took the item"}})
def api_submit(response: Response, store: StoreDep, person: CurrentUser, body: SubmissionIn) -> ReceiptOut:
    turns = store.output_turns(person, body.assignment_id)
    answer = parse_answer(body.model_dump(exclude_none=True), person.mode, len(turns), turns)
    receipt = store.submit(person, body.assignment_id, answer)
    if receipt.duplicate:
        response.status_code = 200
    return ReceiptOut.of(receipt)


@admin.get("/stats", summary="Progress, throughput, agreement", response_model=Stats,
           response_model_exclude_unset=True)  # win_rates only where there are some (pairwise)
def api_stats(store: StoreDep, person: ProjectAdmin):
    return project_stats(store.progress(person.project), store.submissions(person.project),
                         store.gold_answers(person.project))


@admin.get("/export", summary="Export as JSON Lines (docs/design.md §2)", response_class=Response,
           responses={200: {"description": "one record a line, in the format's schema",
                            "content": {JSONL: {"schema": {"type": "string", "format": "binary"}}}}})
def api_export(store: StoreDep, person: ProjectAdmin, format: Annotated[Format, Query()] = "rankings"):
    return jsonl_response(person.project, format, store.submissions(person.project))


@admin.put("/guidelines", summary="Set the project's guidelines (Markdown)",
           dependencies=[Depends(current_user), Depends(header_csrf)])
def api_set_guidelines(store: StoreDep, person: ProjectAdmin, body: GuidelinesIn) -> GuidelinesOut:
    store.set_guidelines(person.project, body.markdown)
    return guidelines_out(store, person.project)


router.include_router(session)
router.include_router(labeling)
router.include_router(admin)
