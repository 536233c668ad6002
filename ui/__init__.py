"""The querier's web UI: query/graph, stores and status pages as static assets; the JSON they
read is the query API's (querier/api.py). The bucket viewer (blocks.py) is served by ``tools
bucket web`` and the compactor. Hand-written HTML/CSS/JS, no build step, nothing fetched from a CDN:
it works offline. Depends on no other promring package; the querier hands it what it shows."""
from .web import WebUI

__all__ = ["WebUI"]
