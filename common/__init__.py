"""Pieces every promring component shares: logging, the ops HTTP endpoints, time parsing."""
