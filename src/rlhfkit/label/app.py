"""The labeling web app: `create_app` assembles the routers over a `Store`.

Pages (server-rendered Jinja2, htmx for swapping in the next item, `routes/pages.py`): `/invite/{token}`
shows whom the link logs in and its button posts the login, `/task` shows their next item; `/admin` is the
project's dashboard (`routes/admin.py`).
The JSON API under `/api` (`routes/api.py`) does the same for scripts and simulated labelers; its
OpenAPI schema is at `/openapi.json`, rendered at `/docs`. `/healthz` says whether the database answers.
Who may do what is in `deps.py`.

Security: the session cookie is HttpOnly and SameSite=Lax, its value stored only as a hash. Every
mutation needs the CSRF token (a form field, or the `X-CSRF-Token` header on the API), an HMAC of the
session cookie. Labelers reach only their own queue; admin pages and exports answer 403. Model text
is untrusted: templates autoescape it, scripts never put it into HTML, and the Content-Security-Policy
allows no inline script at all.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from rlhfkit.errors import UserError
from rlhfkit.label.answers import BadAnswer
from rlhfkit.label.deps import CSRF_HEADER, Unauthorized
from rlhfkit.label.inputs import BadInput, writable
from rlhfkit.label.routes import admin, api, pages, review
from rlhfkit.label.store import Conflict, DiskFull, Forbidden, InviteGone, NotFound, Store
from rlhfkit.label.templating import HERE, fragment, render

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# 507 Insufficient Storage (RFC 4918 §11.5): the server cannot store what it needs to finish the request.
ERROR_STATUS = {Unauthorized: 401, Forbidden: 403, NotFound: 404, Conflict: 409, InviteGone: 410, BadAnswer: 422,
                BadInput: 422, DiskFull: 507}
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
NO_STORE = ("/api/", "/task", "/admin", "/invite", "/history")  # pages with tokens or a person's data are never cached


def create_app(store: Store, *, secure_cookie: bool = False, public_url: str = DEFAULT_PUBLIC_URL) -> FastAPI:
    """The app over `store`. `public_url` is where people reach it (`serve --public-url`): invite links
    printed on the admin page start with it, never with the request's Host header (which a client sets)."""
    app = FastAPI(title="rlhfkit labeling app", version="1", docs_url=None, redoc_url=None,
                  description="Rankings, A/B comparisons and demonstrations from a team of labelers. "
                              "Log in with POST /api/session, then send the returned csrf_token as "
                              f"{CSRF_HEADER} on every POST.")
    app.state.store = store  # reached by routes through `deps.get_store`
    app.state.secure_cookie = secure_cookie
    app.state.public_url = public_url.rstrip("/")
    app.state.flash = {}  # session digest -> the invite link to show once after the redirect (routes/admin.py)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(pages.router)
    app.include_router(admin.router)
    app.include_router(api.router)
    app.include_router(review.pages)
    app.include_router(review.admin_pages)
    app.include_router(review.api)
    app.get("/healthz", include_in_schema=False)(healthz)
    app.add_exception_handler(UserError, user_error)
    app.add_exception_handler(RequestValidationError, bad_request)
    app.middleware("http")(security_headers)
    return app


def healthz(request: Request) -> JSONResponse:
    """For a load balancer, an orchestrator or a test waiting on start-up: 200 when the database answers, else 503
    (no session needed; nothing about the projects is told)."""
    try:
        with request.app.state.store.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return JSONResponse({"status": "database unreachable"}, status_code=503)
    return JSONResponse({"status": "ok"})


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


async def user_error(request: Request, exc: UserError):
    """A `UserError` from a route or a dependency: JSON `{"detail"}` on the API, the error page (or, under
    htmx, the message above the form) on the pages; the status from `ERROR_STATUS`, else 400."""
    status = next((code for cls, code in ERROR_STATUS.items() if isinstance(exc, cls)), 400)
    message = writable(str(exc))  # it may quote what was sent
    if is_api(request):
        return JSONResponse({"detail": message}, status_code=status)
    if request.headers.get("HX-Request") and status in (409, 422, 507):
        # Show the message above the form and keep what the labeler entered (after a 507, to send again).
        return HTMLResponse(fragment("_error.html", message=message), status_code=status,
                            headers={"HX-Retarget": "#form-error", "HX-Reswap": "innerHTML"})
    return render(request, "error.html", status, message=message, status=status)


async def bad_request(request: Request, exc: RequestValidationError):
    """A parameter that does not fit its declared type: FastAPI's 422 on the API (`detail`: a list of `loc`, `msg`,
    `input`, with what was sent made writable: a lone surrogate comes back as its escape), the error page on
    the pages."""
    if is_api(request):
        return JSONResponse({"detail": writable(jsonable_encoder(exc.errors()))}, status_code=422)
    problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or e['loc'][0]}: {e['msg']}" for e in exc.errors())
    return await user_error(request, BadAnswer(problems or "the request does not fit this page"))


async def security_headers(request: Request, call_next):
    response = await call_next(request)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"  # invite tokens never leak through Referer
    response.headers["X-Frame-Options"] = "DENY"
    if request.url.path.startswith(NO_STORE):
        response.headers["Cache-Control"] = "no-store"
    return response
