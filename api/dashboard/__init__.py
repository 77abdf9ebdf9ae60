"""The web dashboard at `/`: server-rendered Jinja2 pages with a little plain JavaScript
(fetch and EventSource, no build step), signed in with an API key into a signed session
cookie. `routes.install_dashboard(app)` mounts it; `session` is what `api.deps` needs to
accept that cookie on the JSON API (same origin, with a CSRF header on unsafe methods).

Nothing here is imported by this package's `__init__`, so `api.deps` can import
`api.dashboard.session` without pulling in the routes (which import `api.deps`).
"""
