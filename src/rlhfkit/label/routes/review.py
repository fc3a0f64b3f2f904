"""Review and correction: a labeler's own history and edits, the admins' review queue (pages and JSON API).

- `/history`: my answers, newest first; `/history/{id}/edit` reopens one in the task form, filled in with
  the answer (and the reviewer's comment when it was sent back); posting it stores a new version. Only the
  labeler's own answers exist here: anyone else's is 404, like one that does not exist.
- `/admin/review`: the project's items, most disputed first, with every labeler's answer, time, notes,
  flags and skip reason; accept, or send back with a comment (the item returns to that labeler's queue).
- The same under `/api/history` and `/api/projects/{project}/review`.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Query, Request, Response
from fastapi.responses import RedirectResponse

from rlhfkit.label import review
from rlhfkit.label.answers import form_to_body, parse_answer
from rlhfkit.label.api_models import (
    EditIn,
    Error,
    HistoryEntry,
    HistoryOut,
    ReceiptOut,
    ReviewDone,
    ReviewIn,
    ReviewQueueOut,
)
from rlhfkit.label.deps import (
    AdminUser,
    CurrentUser,
    PostedForm,
    ProjectAdmin,
    StoreDep,
    admin_user,
    current_user,
    form_csrf,
    header_csrf,
)
from rlhfkit.label.names import ReviewAction
from rlhfkit.label.routes.api import ERRORS
from rlhfkit.label.store import MAX_COMMENT, LeasedItem
from rlhfkit.label.templating import render

pages = APIRouter(include_in_schema=False, dependencies=[Depends(current_user)])
admin_pages = APIRouter(prefix="/admin", include_in_schema=False, dependencies=[Depends(admin_user)])
api = APIRouter(prefix="/api", responses=ERRORS)
REVIEW_PAGE_ITEMS = 50  # items on one review page, most disputed first
NOT_FOUND = {404: {"model": Error, "description": "no such answer of mine (or of this project)"}}
SubmissionId = Annotated[int, Path(ge=1, le=2**31 - 1)]


# ------------------------------------------------------------------------------------ labeler pages

@pages.get("/history")
def history(request: Request, store: StoreDep, person: CurrentUser):
    entries = store.history(person)
    for e in entries:  # numbered as this labeler saw the outputs
        e["ranking_text"] = review.ranking_text(e["answer"]["tiers"], [i for i, _ in e["outputs"]])
    return render(request, "history.html", who=person, entries=entries, sent_back=store.sent_back(person))


@pages.get("/history/{submission_id}/edit")
def edit_page(request: Request, store: StoreDep, person: CurrentUser, submission_id: SubmissionId):
    entry = store.history_entry(person, submission_id)
    # no "Item n of N" (an edit is not the queue's next item); the timer goes on from the answer's stored time
    task = LeasedItem(entry["assignment_id"], entry["item_id"], entry["mode"], entry["prompt"], entry["outputs"],
                      0.0, 0, 0, entry["finished"], entry["trajectories"], entry["tools"])
    return render(request, "edit.html", who=person, task=task, entry=entry, client_id=str(uuid.uuid4()),
                  editing=True, form_action=f"/history/{submission_id}", guidelines=store.guidelines(person.project),
                  prefill=review.prefill_fields(entry["mode"], entry["answer"]))


@pages.post("/history/{submission_id}", dependencies=[Depends(form_csrf)])
def edit_answer(request: Request, store: StoreDep, person: CurrentUser, submission_id: SubmissionId,
                form: PostedForm):
    turns = store.edit_turns(person, submission_id)
    store.edit(person, submission_id, parse_answer(form_to_body(form, len(turns)), person.mode, len(turns), turns))
    back = store.sent_back(person)  # another answer waiting for a correction comes next
    target = f"/history/{back['submission_id']}/edit" if back else "/history"
    if request.headers.get("HX-Request"):
        return Response(status_code=200, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


# -------------------------------------------------------------------------------------- admin pages

def queue(store, project: str) -> list[dict]:
    """The review queue, each answer numbered as its labeler saw the outputs (issue 31, item 17): an admin's
    "Output 4 is cut off" is the labeler's Output 4. `outputs_shown`: (number, candidate) in that order."""
    items = review.review_queue(store.submissions(project))
    for item in items:
        for a in item["answers"]:
            shown = a["shown_order"]
            names = "AB" if a["mode"] == "pairwise" else [str(n + 1) for n in range(len(shown))]
            a["outputs_shown"] = [(name, item["completions"][i]) for name, i in zip(names, shown)]
            a["ranking_text"] = review.ranking_text(a["tiers"], shown)
            a["flags_text"] = review.flags_text(a["flags"], shown) + review.turn_flags_text(a.get("turn_flags"), shown)
            a["likert_shown"] = review.by_shown(a["likert"], shown)
            a["notes_shown"] = review.by_shown(a["output_notes"], shown)
    return items


@admin_pages.get("/review")
def review_page(request: Request, store: StoreDep, person: AdminUser,
                offset: Annotated[int, Query(ge=0, le=10**9)] = 0):
    items = queue(store, person.project)
    return render(request, "review.html", who=person, items=items[offset:offset + REVIEW_PAGE_ITEMS],
                  total=len(items), offset=offset, step=REVIEW_PAGE_ITEMS, max_comment=MAX_COMMENT)


@admin_pages.post("/review/{submission_id}", dependencies=[Depends(form_csrf)])
def review_answer(store: StoreDep, person: AdminUser, submission_id: SubmissionId,
                  action: Annotated[ReviewAction, Form()],
                  comment: Annotated[str, Form(max_length=MAX_COMMENT)] = "",
                  offset: Annotated[int, Form(ge=0, le=10**9)] = 0):
    store.review(person, submission_id, action, comment)
    return RedirectResponse(f"/admin/review?offset={offset}#answer-{submission_id}", status_code=303)


# ------------------------------------------------------------------------------------------ JSON API

@api.get("/history", tags=["labeling"], summary="My answers, newest first")
def api_history(store: StoreDep, person: CurrentUser) -> HistoryOut:
    return HistoryOut(answers=[HistoryEntry.of(e) for e in store.history(person)])


@api.get("/history/{submission_id}", tags=["labeling"], summary="One of my answers, with its earlier versions",
         responses=NOT_FOUND)
def api_history_entry(store: StoreDep, person: CurrentUser, submission_id: SubmissionId) -> HistoryEntry:
    return HistoryEntry.of(store.history_entry(person, submission_id))


@api.put("/history/{submission_id}", tags=["labeling"], dependencies=[Depends(current_user), Depends(header_csrf)],
         summary="Edit one of my answers: a new version (resending the same client_id stores it once)",
         responses={**NOT_FOUND, 409: {"model": Error,
                                       "description": "locked, a skip, or edited elsewhere at the same time"}})
def api_edit(store: StoreDep, person: CurrentUser, submission_id: SubmissionId, body: EditIn) -> ReceiptOut:
    turns = store.edit_turns(person, submission_id)
    answer = parse_answer(body.model_dump(exclude_none=True), person.mode, len(turns), turns)
    return ReceiptOut.of(store.edit(person, submission_id, answer))


@api.get("/projects/{project}/review", tags=["admin"], summary="The review queue, most disputed items first")
def api_review_queue(store: StoreDep, person: ProjectAdmin) -> ReviewQueueOut:
    return ReviewQueueOut(project=person.project, items=queue(store, person.project))


@api.post("/projects/{project}/review/{submission_id}", tags=["admin"], responses=NOT_FOUND,
          dependencies=[Depends(current_user), Depends(header_csrf)],
          summary="Accept an answer, or send it back to its labeler with a comment")
def api_review(store: StoreDep, person: ProjectAdmin, submission_id: SubmissionId, body: ReviewIn) -> ReviewDone:
    return store.review(person, submission_id, body.action, body.comment)
