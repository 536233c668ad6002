"""``promring sidecar``: next to a Prometheus, its recent data over the StoreAPI (remote read),
its blocks shipped to the bucket, and its configuration reloads (Thanos's sidecar)."""
