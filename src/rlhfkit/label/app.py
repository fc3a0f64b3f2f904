"""The labeling web app: thin FastAPI routes over `Store`.

Pages (server-rendered Jinja2, htmx for swapping in the next item): `/invite/{token}` logs a person in,
`/task` shows their next item, `/admin` the project's dashboard. The JSON API under `/api` does the same
for scripts and simulated labelers; its OpenAPI schema is at `/openapi.json`, rendered at `/docs`.

Security: the session cookie is HttpOnly and SameSite=Lax, its value stored only as a hash. Every
mutation needs the CSRF token (a form field, or the `X-CSRF-Token` header on the API), an HMAC of the
session cookie. Labelers reach only their own queue; admin pages and exports answer 403. Model text
is untrusted: templates autoescape it, scripts never put it into HTML, and the Content-Security-Policy
allows no inline script at all.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from pathlib import Path
from typing import Literal

import jinja2
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from starlette.datastructures import FormData

from rlhfkit.data.schemas import FLAGS
from rlhfkit.errors import UserError
from rlhfkit.label import export
from rlhfkit.label.answers import SKIP_REASONS, BadAnswer, form_to_body, parse_answer
from rlhfkit.label.stats import project_stats
from rlhfkit.label.store import Conflict, Forbidden, NotFound, Store, Who

HERE = Path(__file__).parent
COOKIE = "rlhf_session"
CSRF_HEADER = "X-CSRF-Token"
HTMX_FILE = "vendor/htmx-2.0.11.min.js"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class Unauthorized(UserError):
    pass


_STATUS = {Unauthorized: 401, Forbidden: 403, NotFound: 404, Conflict: 409, BadAnswer: 422}


async def read_form(request: Request) -> FormData:
    """The posted form, read on the event loop. Routes take it as a dependency so that they can be plain
    `def`s: FastAPI runs those in its thread pool, and their database calls never block the loop."""
    return await request.form()


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: HMAC-SHA256 keyed by the (secret) session cookie."""
    return hmac.new(session_token.encode(), b"rlhfkit-csrf", hashlib.sha256).hexdigest()


# ----------------------------------------------------------------------------------------- API models

class LoginIn(BaseModel):
    token: str = Field(description="the token from an invite link (/invite/TOKEN)")


class SubmissionIn(BaseModel):
    """An answer to a leased item. Indices are `outputs[].index` of the task; the pairwise `choice`
    names outputs as shown: A = outputs[0], B = outputs[1]."""

    client_id: str = Field(description="UUID made by the client; a resend with the same id is stored once")
    assignment_id: int
    kind: Literal["rank", "pairwise", "demo", "skip"]
    elapsed_ms: int = 0
    ranking: list[list[int]] | None = Field(None, description="rank: tie groups best first, e.g. [[2],[0,3],[1]]")
    likert: list[int] | None = Field(None, description="rank: 1-7 per output, by output index")
    flags: list[dict[str, bool]] | None = Field(None, description=f"rank: per output, any of {', '.join(FLAGS)}")
    notes: list[str] | str | None = Field(None, description="rank: one per output; pairwise/skip: one text")
    choice: Literal["A", "B", "equal"] | None = None
    text: str | None = Field(None, description="demo: the ideal response")
    reason: str | None = Field(None, description=f"skip: one of {', '.join(SKIP_REASONS)}")


def _task_json(task) -> dict | None:
    if task is None:
        return None
    return {"assignment_id": task.assignment_id, "item_id": task.item_id, "mode": task.mode, "prompt": task.prompt,
            "outputs": [{"index": i, "text": t} for i, t in task.outputs], "lease_expires_at": task.expires_at,
            "page": task.page, "pages": task.pages}


# --------------------------------------------------------------------------------------------- the app

def create_app(store: Store, *, secure_cookie: bool = False) -> FastAPI:
    app = FastAPI(title="rlhfkit labeling app", version="1", docs_url=None, redoc_url=None,
                  description="Rankings, A/B comparisons and demonstrations from a team of labelers. "
                              "Log in with POST /api/session, then send the returned csrf_token as "
                              f"{CSRF_HEADER} on every POST.")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    templates = Jinja2Templates(env=env)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    # ------------------------------------------------------------------------------------ helpers

    def render(request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
        token = request.cookies.get(COOKIE)
        context.setdefault("who", None)
        return templates.TemplateResponse(request, name, {"csrf": csrf_token(token) if token else "",
                                                          "htmx": HTMX_FILE, "flags": FLAGS,
                                                          "skip_reasons": SKIP_REASONS, **context},
                                          status_code=status_code)

    def who(request: Request) -> Who:
        token = request.cookies.get(COOKIE)
        person = store.who(token) if token else None
        if person is None:
            raise Unauthorized("not logged in: open your invite link")
        return person

    def check_csrf(request: Request, sent: str | None) -> None:
        token = request.cookies.get(COOKIE, "")
        if not sent or not hmac.compare_digest(sent, csrf_token(token)):
            raise Forbidden("missing or wrong CSRF token; reload the page")

    def admin_of(request: Request, project: str | None = None) -> Who:
        person = who(request)
        if not person.is_admin or (project is not None and project != person.project):
            raise Forbidden("this page is for the project's admins")
        return person

    def is_api(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 400)
        if is_api(request):
            return JSONResponse({"detail": str(exc)}, status_code=status)
        if request.headers.get("HX-Request") and status in (409, 422):
            # Show the message above the form and keep what the labeler entered.
            return HTMLResponse(env.get_template("_error.html").render(message=str(exc)), status_code=status,
                                headers={"HX-Retarget": "#form-error", "HX-Reswap": "innerHTML"})
        return render(request, "error.html", status, message=str(exc), status=status)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"  # invite tokens never leak through Referer
        response.headers["X-Frame-Options"] = "DENY"
        if request.url.path.startswith(("/api/", "/task", "/admin", "/invite")):
            response.headers["Cache-Control"] = "no-store"
        return response

    def set_session(response: Response, token: str) -> None:
        response.set_cookie(COOKIE, token, httponly=True, samesite="lax", secure=secure_cookie,
                            max_age=14 * 24 * 3600, path="/")

    # -------------------------------------------------------------------------------------- pages

    @app.get("/", include_in_schema=False)
    def home(request: Request):
        token = request.cookies.get(COOKIE)
        person = store.who(token) if token else None
        if person is None:
            return render(request, "landing.html", 401)
        return RedirectResponse("/admin" if person.is_admin else "/task", status_code=303)

    @app.get("/invite/{token}", include_in_schema=False)
    def accept_invite(token: str):
        session = store.login(token)
        if session is None:
            raise NotFound("this invite link is unknown or was replaced by a newer one; ask your admin")
        response = RedirectResponse("/", status_code=303)  # drops the token from the address bar
        set_session(response, session)
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, form: FormData = Depends(read_form)):
        check_csrf(request, form.get("csrf_token"))
        store.logout(request.cookies.get(COOKIE, ""))
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    def task_page(request: Request, person: Who):
        task = store.next_task(person)
        fragment = bool(request.headers.get("HX-Request"))
        return render(request, "_task.html" if fragment else "task.html", who=person, task=task,
                      client_id=str(uuid.uuid4()))

    @app.get("/task", include_in_schema=False)
    def task(request: Request):
        return task_page(request, who(request))

    @app.post("/task/{assignment_id}", include_in_schema=False)
    def answer(request: Request, assignment_id: int, form: FormData = Depends(read_form)):
        person = who(request)
        check_csrf(request, form.get("csrf_token"))
        k = store.output_count(person, assignment_id)
        store.submit(person, assignment_id, parse_answer(form_to_body(form, k), person.mode, k))
        if request.headers.get("HX-Request"):
            return task_page(request, person)
        return RedirectResponse("/task", status_code=303)

    def admin_context(person: Who) -> dict:
        rows = store.submissions(person.project)
        return {"who": person, "stats": project_stats(store.progress(person.project), rows),
                "formats": export.FORMATS}

    @app.get("/admin", include_in_schema=False)
    def admin(request: Request):
        return render(request, "admin.html", **admin_context(admin_of(request)))

    @app.post("/admin/invite", include_in_schema=False)
    def admin_invite(request: Request, form: FormData = Depends(read_form)):
        person = admin_of(request)
        check_csrf(request, form.get("csrf_token"))
        name, role = str(form.get("name") or ""), str(form.get("role") or "labeler")
        token = store.invite(person.project, name, role)
        link = f"{str(request.base_url).rstrip('/')}/invite/{token}"
        return render(request, "admin.html", invited={"name": name, "role": role, "link": link},
                      **admin_context(person))

    def export_response(project: str, fmt: str) -> Response:
        import json

        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n"
                        for r in export.records(store.submissions(project), fmt))
        return Response(lines, media_type="application/x-ndjson",
                        headers={"Content-Disposition": f'attachment; filename="{project}-{fmt}.jsonl"'})

    @app.get("/admin/export", include_in_schema=False)
    def admin_export(request: Request, format: str = "rankings"):
        return export_response(admin_of(request).project, format)

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request):
        return render(request, "docs.html", api=app.openapi())

    # ---------------------------------------------------------------------------------------- API

    @app.post("/api/session", tags=["session"], summary="Log in with an invite token")
    def api_login(body: LoginIn):
        session = store.login(body.token)
        if session is None:
            raise Unauthorized("unknown invite token")
        person = store.who(session)
        response = JSONResponse({"name": person.name, "role": person.role, "project": person.project,
                                 "mode": person.mode, "csrf_token": csrf_token(session)})
        set_session(response, session)
        return response

    @app.get("/api/me", tags=["session"], summary="Who is logged in")
    def api_me(request: Request):
        p = who(request)
        return {"name": p.name, "role": p.role, "project": p.project, "mode": p.mode}

    @app.post("/api/next", tags=["labeling"], summary="Lease the next item (or get the current lease)")
    def api_next(request: Request):
        person = who(request)
        check_csrf(request, request.headers.get(CSRF_HEADER))
        return {"task": _task_json(store.next_task(person))}

    @app.post("/api/submissions", tags=["labeling"], status_code=201,
              summary="Answer a leased item; resending the same client_id stores it once (200)")
    def api_submit(request: Request, body: SubmissionIn):
        person = who(request)
        check_csrf(request, request.headers.get(CSRF_HEADER))
        k = store.output_count(person, body.assignment_id)
        answer = parse_answer(body.model_dump(exclude_none=True), person.mode, k)
        receipt = store.submit(person, body.assignment_id, answer)
        return JSONResponse({"submission_id": receipt.submission_id, "client_id": receipt.client_id,
                             "assignment_id": receipt.assignment_id, "item_id": receipt.item_id,
                             "kind": receipt.kind, "duplicate": receipt.duplicate},
                            status_code=200 if receipt.duplicate else 201)

    @app.get("/api/projects/{project}/stats", tags=["admin"], summary="Progress, throughput, agreement")
    def api_stats(request: Request, project: str):
        admin_of(request, project)
        return project_stats(store.progress(project), store.submissions(project))

    @app.get("/api/projects/{project}/export", tags=["admin"], summary="Export as JSON Lines (DESIGN §2)")
    def api_export(request: Request, project: str,
                   format: Literal["rankings", "pairs", "demos", "raw"] = Query("rankings")):
        admin_of(request, project)
        return export_response(project, format)

    return app
