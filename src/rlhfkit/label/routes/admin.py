"""The admin pages of one project: the dashboard (progress, agreement, throughput), invites, exports.

Every route needs an admin of the project (`admin_user`, on the router: a labeler gets 403).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request

from rlhfkit.label import export
from rlhfkit.label.db import Role
from rlhfkit.label.deps import MAX_NAME, AdminUser, StoreDep, admin_user, form_csrf
from rlhfkit.label.export import Format
from rlhfkit.label.responses import jsonl_response
from rlhfkit.label.stats import project_stats
from rlhfkit.label.store import Store, Who
from rlhfkit.label.templating import render

router = APIRouter(prefix="/admin", include_in_schema=False, dependencies=[Depends(admin_user)])


def dashboard(store: Store, person: Who) -> dict:
    rows = store.submissions(person.project)
    return {"who": person, "stats": project_stats(store.progress(person.project), rows), "formats": export.FORMATS}


@router.get("")
def admin(request: Request, store: StoreDep, person: AdminUser):
    return render(request, "admin.html", **dashboard(store, person))


@router.post("/invite", dependencies=[Depends(form_csrf)])
def admin_invite(request: Request, store: StoreDep, person: AdminUser,
                 name: Annotated[str, Form(min_length=1, max_length=MAX_NAME)],
                 role: Annotated[Role, Form()] = "labeler"):
    token = store.invite(person.project, name, role)
    link = f"{str(request.base_url).rstrip('/')}/invite/{token}"
    return render(request, "admin.html", invited={"name": name, "role": role, "link": link},
                  **dashboard(store, person))


@router.get("/export")
def admin_export(store: StoreDep, person: AdminUser, format: Annotated[Format, Query()] = "rankings"):
    return jsonl_response(person.project, format, store.submissions(person.project))
