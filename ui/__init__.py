"""The querier's web UI: query/graph, stores and status pages as static assets plus the small
JSON endpoints they read. Hand-written HTML/CSS/JS, no build step, nothing fetched from a CDN:
it works offline. Depends on no other promring package; the querier hands it what it shows."""
from .web import WebUI, store_statuses

__all__ = ["WebUI", "store_statuses"]
