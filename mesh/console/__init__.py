"""The web console of a mesh (``mesh ui``, ``mesh up --ui``): agents, runs, live run trees.

A small ASGI app (Starlette, served by uvicorn) that talks to the mesh through
the typed client, as the ``mesh`` command does, and serves its own page:

    app.py          the routes: the page, and the JSON API it is written against
    mesh_view.py    the AgentClient calls (cards, health, runs, watches)
    event_feed.py   a run's event stream, from a gRPC stream to Server-Sent Events
    runs_json.py    run records as JSON; the text rules (redacted, bounded)
    events_json.py  events as JSON and as Server-Sent Events
    params.py       what a request may say
    responses.py    errors as JSON with a status, never a traceback
    security.py     token, CSRF, allowed hosts, security headers
    serve.py        serving it on an address: safe by default
    static/         the page: HTML, script and styles, bundled (it works offline)
"""

from mesh.console.app import console_app
from mesh.console.serve import DEFAULT_ADDRESS, TOKEN_ENV, ConsoleServer

__all__ = ["DEFAULT_ADDRESS", "TOKEN_ENV", "ConsoleServer", "console_app"]
