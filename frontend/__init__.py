"""``promring query-frontend``: splits, caches and retries range queries in front of a querier."""
