"""Server-rendered pages: Jinja2 with autoescape (model text is untrusted), one `render` for every page."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from rlhfkit.data.schemas import FLAGS
from rlhfkit.label.answers import SKIP_REASONS
from rlhfkit.label.deps import COOKIE, csrf_token
from rlhfkit.label.guidelines import FLAG_HELP, render_markdown
from rlhfkit.label.trajectory import arguments_text

HERE = Path(__file__).parent
HTMX_FILE = "vendor/htmx-2.0.11.min.js"
env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
env.filters["markdown"] = render_markdown
env.filters["arguments"] = arguments_text  # a tool call's arguments as JSON text (escaped by autoescape)
env.filters["utc"] = lambda t: datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
templates = Jinja2Templates(env=env)


def render(request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
    """A page (or an htmx fragment) with what every template uses: the CSRF token, the flags and their
    meanings, the skip reasons."""
    token = request.cookies.get(COOKIE)
    context.setdefault("who", None)
    context.setdefault("editing", False)  # the edit page: a stored answer in the task form, no skip
    return templates.TemplateResponse(request, name, {"csrf": csrf_token(token) if token else "",
                                                      "htmx": HTMX_FILE, "flags": FLAGS,
                                                      "flag_help": FLAG_HELP,
                                                      "skip_reasons": SKIP_REASONS, **context},
                                      status_code=status_code)


def fragment(name: str, **context) -> str:
    """A bare template (no page around it), e.g. the error line htmx swaps in above a form."""
    return env.get_template(name).render(**context)
