"""``promring tools bucket ls|inspect``: what is in a bucket, in Thanos's terms."""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

from objstore import bucket_from_config
from objstore.blocks import block_metas


def _fmt_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fmt_dur(ms: int) -> str:
    s = ms // 1000
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return "".join(f"{v}{u}" for v, u in ((d, "d"), (h, "h"), (m, "m"), (s, "s")) if v) or "0s"


def render_ls(metas: list[dict]) -> str:
    return "\n".join(m["ulid"] + (" (partial upload: no meta.json)" if m.get("partial") else "")
                     for m in metas)


def render_inspect(metas: list[dict]) -> str:
    cols = ["ULID", "FROM", "UNTIL", "RANGE", "SERIES", "SAMPLES", "CHUNKS", "LEVEL", "RESOLUTION",
            "SOURCE", "SIZE", "LABELS", "MARKS"]
    rows = [cols]
    for m in metas:
        if m.get("partial"):
            rows.append([m["ulid"], "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "partial upload", ""])
            continue
        th = m.get("thanos") or {}
        st = m.get("stats") or {}
        labels = ",".join(f'{k}="{v}"' for k, v in sorted((th.get("labels") or {}).items()))
        res = (th.get("downsample") or {}).get("resolution", 0)
        rows.append([m["ulid"], _fmt_time(m["minTime"]), _fmt_time(m["maxTime"]),
                     _fmt_dur(m["maxTime"] - m["minTime"]), str(st.get("numSeries", 0)),
                     str(st.get("numSamples", 0)), str(st.get("numChunks", 0)),
                     str((m.get("compaction") or {}).get("level", 1)), _fmt_dur(res) if res else "0s",
                     th.get("source", "-"), str(m.get("size_bytes") or "-"), labels,
                     "deletion" if m.get("deletion_marked") else ""])
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def run_bucket_tool(action: str, objstore_yaml: str, output: str = "table") -> str:
    async def go() -> str:
        bucket = bucket_from_config(objstore_yaml)
        try:
            metas = await block_metas(bucket)
        finally:
            await bucket.close()
        if output == "json":
            return json.dumps(metas, indent=1)
        return render_ls(metas) if action == "ls" else render_inspect(metas)
    return asyncio.run(go())


def run_verify(objstore_yaml: str, deep: bool, output: str = "table") -> tuple[str, bool]:
    """``tools bucket verify``: overlaps and broken blocks; ok is False when any are found."""
    from compactor import verify

    async def go():
        bucket = bucket_from_config(objstore_yaml)
        try:
            return await verify(bucket, deep=deep)
        finally:
            await bucket.close()
    issues = asyncio.run(go())
    if output == "json":
        return json.dumps([vars(i) for i in issues],
                          indent=1, default=str), not issues
    if not issues:
        return "no issues found", True
    return "\n".join(f"{i.kind}: {i.message}" for i in issues), False
