"""The console's routes: the page shells and their static files.

A page needs no database: signed out (no session cookie) it redirects to
/login; signed in, its script asks GET /v1/sessions/current who the user is
(and for the CSRF token), and a dead session sends it to /login too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

import outbox
from outbox.api.auth import SESSION_COOKIE

HERE = Path(__file__).parent
STATIC_PATH = "/static"

# Scripts and styles from this origin only; no inline script or style
# attribute, no eval, no plugin, no framing, no foreign form target.
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    "connect-src 'self'", "font-src 'self'", "object-src 'none'", "base-uri 'none'",
    "form-action 'self'", "frame-ancestors 'none'"))
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)


def _page(request: Request, template: str, **values: Any) -> Response:
    if template != "login.html" and not request.cookies.get(SESSION_COOKIE):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303,
                                headers=SECURITY_HEADERS)
    return templates.TemplateResponse(request, template, {
        "version": outbox.__version__, "static": STATIC_PATH, **values},
        headers=SECURITY_HEADERS)


@router.get("/")
async def inbox(request: Request) -> Response:
    return _page(request, "inbox.html", chat_id="")


@router.get("/chats/{chat_id}")
async def chat(chat_id: str, request: Request) -> Response:
    return _page(request, "inbox.html", chat_id=chat_id)


@router.get("/ops")
async def operations(request: Request) -> Response:
    return _page(request, "ops.html")


@router.get("/login")
async def login(request: Request) -> Response:
    return _page(request, "login.html")


def install_console(app: FastAPI) -> None:
    """Add the console's pages and static files to the API's app."""
    app.include_router(router)
    app.mount(STATIC_PATH, StaticFiles(directory=str(HERE / "static")), name="static")
