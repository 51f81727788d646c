"""The web console `outbox serve` hosts at `/`: the team inbox and the
operations view, built on the public /v1 API alone.

The pages are Jinja2 shells with no data in them: each page's script (in
static/, plain JavaScript, no build step) reads and changes everything
through /v1 with the session cookie, so every feature of the console is also
an API feature. Templates and static files ship inside the package.

Every page is served with a Content-Security-Policy that allows scripts and
styles from this origin only (no inline script, no CDN), and may not be
framed by another site.
"""

from __future__ import annotations

from outbox.console.pages import install_console

__all__ = ["install_console"]
