"""The admin pages of one project: the dashboard (progress, agreement, throughput), people, guidelines, exports.

Every route needs an admin of the project (`admin_user`, on the router: a labeler gets 403). Every form
posts, then redirects (POST-redirect-GET): a reload never sends it again. A new invite link is shown
once, on the page the redirect leads to (`app.state.flash`, in this process's memory, keyed by session);
re-inviting someone who has a live link shows a confirmation first.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse

from rlhfkit.label.configs import FORMATS, Format
from rlhfkit.label.deps import MAX_NAME, AdminUser, SessionCookie, StoreDep, admin_user, form_csrf
from rlhfkit.label.names import Role
from rlhfkit.label.responses import jsonl_response
from rlhfkit.label.stats import project_stats
from rlhfkit.label.store import MAX_GUIDELINES, AlreadyInvited, Store, Who, digest
from rlhfkit.label.templating import render

router = APIRouter(prefix="/admin", include_in_schema=False, dependencies=[Depends(admin_user)])
EXPIRY_CHOICES = {"1d": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0, "never": None}  # the invite form's


def dashboard(store: Store, person: Who) -> dict:
    answers = store.submissions(person.project)
    stats = project_stats(store.progress(person.project), answers, store.gold_answers(person.project))
    # the answers (skips aside) by whether their labeler was shown the judge's draft (None: unknown, migration 0008)
    made = [r["judge_draft"] or "unknown" for r in answers if r["kind"] != "skip"]
    return {"who": person, "stats": stats, "formats": FORMATS,
            "guidelines": store.guidelines(person.project), "expiry_choices": EXPIRY_CHOICES,
            "judge_draft": store.judge_draft(person.project),
            "draft_answers": {s: made.count(s) for s in ("shown", "hidden", "unknown")}}


def back_to_admin() -> RedirectResponse:
    return RedirectResponse("/admin", status_code=303)


@router.get("")
def admin(request: Request, store: StoreDep, person: AdminUser, token: SessionCookie):
    invited = request.app.state.flash.pop(digest(token or ""), None)  # shown once
    return render(request, "admin.html", invited=invited, **dashboard(store, person))


@router.post("/invite", dependencies=[Depends(form_csrf)])
def admin_invite(request: Request, store: StoreDep, person: AdminUser, token: SessionCookie,
                 name: Annotated[str, Form(min_length=1, max_length=MAX_NAME)],
                 role: Annotated[Role, Form()] = "labeler",
                 expires: Annotated[str, Form(pattern="^(" + "|".join(EXPIRY_CHOICES) + ")$")] = "7d",
                 single_use: Annotated[bool, Form()] = False, replace: Annotated[bool, Form()] = False):
    try:
        invite = store.invite(person.project, name, role, replace=replace, expires_in=EXPIRY_CHOICES[expires],
                              single_use=single_use)
    except AlreadyInvited as exc:  # ask first: replacing the link logs that person out
        return render(request, "confirm_invite.html", who=person, message=str(exc),
                      invite={"name": name, "role": role, "expires": expires, "single_use": single_use})
    link = f"{request.app.state.public_url}/invite/{invite}"
    request.app.state.flash[digest(token or "")] = {"name": name, "role": role, "link": link, "expires": expires,
                                                    "single_use": single_use}
    return back_to_admin()


@router.post("/revoke", dependencies=[Depends(form_csrf)])
def admin_revoke(store: StoreDep, person: AdminUser, name: Annotated[str, Form(min_length=1, max_length=MAX_NAME)]):
    store.revoke(person.project, name)
    return back_to_admin()


@router.post("/guidelines", dependencies=[Depends(form_csrf)])
def admin_guidelines(store: StoreDep, person: AdminUser,
                     markdown: Annotated[str, Form(max_length=MAX_GUIDELINES)] = ""):
    store.set_guidelines(person.project, markdown.replace("\r\n", "\n"))
    return back_to_admin()


@router.post("/judge-draft", dependencies=[Depends(form_csrf)])
def admin_judge_draft(store: StoreDep, person: AdminUser, show: Annotated[bool, Form()] = False):
    """Show the judge's ranking to labelers as a starting draft, or hide it (the default)."""
    store.set_judge_draft(person.project, show)
    return back_to_admin()


@router.get("/export")
def admin_export(store: StoreDep, person: AdminUser, format: Annotated[Format, Query()] = "rankings"):
    return jsonl_response(person.project, format, store.submissions(person.project))
