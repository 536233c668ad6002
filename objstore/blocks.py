"""The blocks of a bucket as their meta.json says: what ``tools bucket ls|inspect``, the bucket
web UI and the compactor's block viewer list. Lives here so every one of them imports it
downward."""
from __future__ import annotations

import json

from .bucket import Bucket, is_not_found

ULID_LEN = 26


async def block_metas(bucket: Bucket) -> list[dict]:
    """meta.json of every complete block; partial uploads are reported, not hidden."""
    out = []
    for entry in await bucket.iter(""):
        ulid = entry.rstrip("/")
        if len(ulid) != ULID_LEN:
            continue
        try:
            meta = json.loads(await bucket.get(f"{ulid}/meta.json"))
        except Exception as e:
            if is_not_found(e):
                out.append({"ulid": ulid, "partial": True})
                continue
            raise
        meta["deletion_marked"] = await bucket.exists(f"{ulid}/deletion-mark.json")
        meta["size_bytes"] = sum(f.get("size_bytes", 0) for f in (meta.get("thanos") or {}).get("files", []))
        out.append(meta)
    return sorted(out, key=lambda m: (m.get("minTime", 0), m["ulid"]))
