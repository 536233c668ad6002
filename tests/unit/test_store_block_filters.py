"""Store gateway block filters (store.metafilter): --selector.relabel-config,
--consistency-delay and --ignore-deletion-marks-delay, as Thanos's meta fetcher filters."""
from __future__ import annotations

import hashlib
import json
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_store_gateway import (H2, T0, _get, make_series, run, upload_dir,  # noqa: E402
                                with_gateway)

from objstore import FilesystemBucket  # noqa: E402
from receiver.tsdb.block import write_block_from_samples  # noqa: E402
from receiver.tsdb.relabel import parse_relabel_configs, relabel, selects_block  # noqa: E402
from store.server import StoreConfig, StoreGateway  # noqa: E402


def _block(tmp: Path, cluster: str, upload_time: str = "", **thanos) -> Path:
    meta = write_block_from_samples(tmp / "blocks", make_series(3, T0, H2, step=600_000),
                                    T0, T0 + H2, thanos_meta={"labels": {"cluster": cluster},
                                                              "source": "sidecar", **thanos})
    bdir = tmp / "blocks" / meta.ulid
    if upload_time:  # as an uploader stamps it
        doc = json.loads((bdir / "meta.json").read_text())
        doc["thanos"]["upload_time"] = upload_time
        (bdir / "meta.json").write_text(json.dumps(doc))
    return bdir


def _rfc3339(ago_s: float) -> str:
    t = datetime.now(timezone.utc) - timedelta(seconds=ago_s)
    return t.isoformat().replace("+00:00", "Z")


def _mark(ulid: str, ago_s: float) -> bytes:
    return json.dumps({"id": ulid, "deletion_time": int(time.time() - ago_s),
                       "version": 1}).encode()


async def _served(client) -> list[str]:
    return sorted(dict(ls)["cluster"] for ls in (await client.info()).label_sets)


def test_hashmod_is_prometheus_md5_last_8_bytes_and_keep_drop_select() -> None:
    rules = parse_relabel_configs(
        "- {action: hashmod, source_labels: [__block_id], target_label: shard, modulus: 3}\n"
        "- {action: keep, source_labels: [shard], regex: 1}\n"
        "- {action: drop, source_labels: [cluster], regex: 'b.*'}\n", "--x")
    for ulid in ("01HGW0000000000000000000AA", "01HGW0000000000000000000AB",
                 "01JX5Z2P4Q7R8S9T0V1W2X3Y4Z"):
        shard = int.from_bytes(hashlib.md5(ulid.encode()).digest()[8:], "big") % 3
        assert relabel({"__block_id": ulid}, rules[:1]) == {"__block_id": ulid,
                                                            "shard": str(shard)}
        assert selects_block(ulid, {"cluster": "a"}, rules) == (shard == 1)
        assert not selects_block(ulid, {"cluster": "b"}, rules)
    assert selects_block("01HGW0000000000000000000AA", None, [])


@pytest.mark.parametrize("text, words", [
    ("- {action: replace, source_labels: [a], target_label: b}", "unsupported relabel action"),
    ("- {action: hashmod, source_labels: [a], target_label: b}", "non-zero modulus"),
    ("- {action: hashmod, source_labels: [a], modulus: 2}", "target_label"),
    ("- {action: keep, source_labels: [a], regex: '(('}", "invalid regex"),
    ("{action: keep}", "list of relabel configs"),
])
def test_selector_config_mistakes_fail_the_start_with_the_flag_named(
        tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words) as e:
        StoreGateway(StoreConfig(data_dir=tmp_path, objstore_config="",
                                 selector_relabel_config=text))
    assert "--selector.relabel-config" in str(e.value)


def test_selector_relabel_config_shards_blocks_by_external_labels(tmp_path: Path) -> None:
    blocks = {c: _block(tmp_path, c) for c in ("a1", "a2", "b1", "c1")}
    shard_of = {c: int.from_bytes(hashlib.md5(p.name.encode()).digest()[8:], "big") % 2
                for c, p in blocks.items()}
    sel = ("- {action: drop, source_labels: [cluster], regex: 'c.*'}\n"
           "- {action: hashmod, source_labels: [__block_id], target_label: shard, modulus: 2}\n"
           "- {action: keep, source_labels: [shard], regex: '%d'}\n")
    served: dict[int, list[str]] = {}

    async def main() -> None:
        bkt = FilesystemBucket(tmp_path / "bucket")
        for p in blocks.values():
            await upload_dir(bkt, p)
        for shard in (0, 1):
            async def body(gw, client, shard=shard) -> None:
                served[shard] = await _served(client)
                text = await _get(gw, "/metrics")
                assert f'thanos_blocks_meta_synced{{state="label-excluded"}} ' \
                       f'{4.0 - len(served[shard])}' in text
            await with_gateway(tmp_path / f"s{shard}", bkt, body,
                               selector_relabel_config=sel % shard)

    run(main())
    for shard in (0, 1):
        assert served[shard] == sorted(c for c in ("a1", "a2", "b1") if shard_of[c] == shard)


def test_deletion_marks_are_ignored_for_the_delay_and_partial_marks_keep_the_block(
        tmp_path: Path) -> None:
    """Thanos's default --ignore-deletion-marks-delay=24h: a block marked an hour ago is still
    served (its replacement may not be loaded everywhere yet), one marked 25 h ago is not; a
    mark that is not valid JSON (a partial upload) is ignored, the block stays."""
    fresh, old, partial = (_block(tmp_path, c) for c in ("fresh", "old", "partial"))

    async def main() -> None:
        bkt = FilesystemBucket(tmp_path / "bucket")
        for p in (fresh, old, partial):
            await upload_dir(bkt, p)
        await bkt.upload(f"{fresh.name}/deletion-mark.json", _mark(fresh.name, 3600))
        await bkt.upload(f"{old.name}/deletion-mark.json", _mark(old.name, 25 * 3600))
        await bkt.upload(f"{partial.name}/deletion-mark.json", b'{"id": "')

        async def body(gw, client) -> None:
            assert await _served(client) == ["fresh", "partial"]
            # a served block whose mark ages past the delay goes at the next sync
            await bkt.upload(f"{fresh.name}/deletion-mark.json", _mark(fresh.name, 24 * 3600 + 5))
            await gw.sync_once()
            assert await _served(client) == ["partial"]
            assert 'thanos_blocks_meta_synced{state="marked-for-deletion"} 2.0' in \
                await _get(gw, "/metrics")
        await with_gateway(tmp_path, bkt, body,
                           ignore_deletion_marks_delay_s=StoreConfig.ignore_deletion_marks_delay_s)

        async def short(gw, client) -> None:  # --ignore-deletion-marks-delay=30m
            assert await _served(client) == ["partial"]
        await with_gateway(tmp_path / "short", bkt, short, ignore_deletion_marks_delay_s=1800)

    run(main())


def test_consistency_delay_holds_back_fresh_uploads_by_upload_time_else_ulid(
        tmp_path: Path) -> None:
    """--consistency-delay: a block whose meta.json says it was uploaded 2 h ago is served
    under a 1 h delay although its ULID is new; one without an upload time (ULID: now) is
    too fresh, unless the compactor wrote it; it is loaded once the delay has passed."""
    settled = _block(tmp_path, "settled", upload_time=_rfc3339(7200))
    new = _block(tmp_path, "new")
    compacted = _block(tmp_path, "compacted", source="compactor")

    async def main() -> None:
        bkt = FilesystemBucket(tmp_path / "bucket")
        for p in (settled, new, compacted):
            await upload_dir(bkt, p)

        async def body(gw, client) -> None:
            assert await _served(client) == ["compacted", "settled"]
            assert 'thanos_blocks_meta_synced{state="too-fresh"} 1.0' in await _get(gw, "/metrics")
            gw.store._filters = gw.filters = type(gw.filters)(consistency_delay_s=1.0)
            time.sleep(1.1)
            await gw.sync_once()
            assert await _served(client) == ["compacted", "new", "settled"]
        await with_gateway(tmp_path, bkt, body, consistency_delay_s=3600)

        async def default(gw, client) -> None:  # Thanos's default 0s: everything at once
            assert await _served(client) == ["compacted", "new", "settled"]
        await with_gateway(tmp_path / "d", bkt, default)

    run(main())


def test_blocks_a_compacted_block_covers_are_not_served_while_their_marks_age(
        tmp_path: Path) -> None:
    """Thanos's deduplicate filter: with deletion marks ignored for 24 h, the compactor's
    inputs stay in the bucket next to its output; within one group (resolution, external
    labels) a block whose sources another block's sources contain is not served."""
    a, b, other = (_block(tmp_path, c) for c in ("x", "x", "y"))
    out = _block(tmp_path, "x", source="compactor")
    doc = json.loads((out / "meta.json").read_text())
    doc["compaction"]["sources"] = sorted([a.name, b.name, out.name])
    (out / "meta.json").write_text(json.dumps(doc))

    async def main() -> None:
        bkt = FilesystemBucket(tmp_path / "bucket")
        for p in (a, b, other):
            await upload_dir(bkt, p)
        for p in (a, b):  # marked by the compactor a minute ago
            await bkt.upload(f"{p.name}/deletion-mark.json", _mark(p.name, 60))

        async def body(gw, client) -> None:
            assert sorted(gw.store.blocks) == sorted([a.name, b.name, other.name])
            await upload_dir(bkt, out)  # the compactor's output appears
            await gw.sync_once()
            assert sorted(gw.store.blocks) == sorted([out.name, other.name])
            assert 'thanos_blocks_meta_synced{state="duplicate"} 2.0' in await _get(gw, "/metrics")
        await with_gateway(tmp_path, bkt, body,
                           ignore_deletion_marks_delay_s=StoreConfig.ignore_deletion_marks_delay_s)

    run(main())


def test_filter_flags_parse_as_thanos(tmp_path: Path, capsys) -> None:
    from promring.cli import build_parser, main, store_config

    def cfg(*flags: str) -> StoreConfig:
        a = build_parser().parse_args(["store", "--objstore.config", "x", *flags])
        return store_config(a, str(tmp_path), "", "127.0.0.1:0", "")

    d = cfg()  # Thanos's defaults
    assert (d.consistency_delay_s, d.ignore_deletion_marks_delay_s, d.selector_relabel_config) \
        == (0.0, 24 * 3600.0, "")
    rules = "- {action: keep, source_labels: [cluster], regex: a}\n"
    (tmp_path / "sel.yml").write_text(rules)
    c = cfg("--consistency-delay=30m", "--ignore-deletion-marks-delay=12h",
            f"--selector.relabel-config-file={tmp_path / 'sel.yml'}")
    assert (c.consistency_delay_s, c.ignore_deletion_marks_delay_s, c.selector_relabel_config) \
        == (1800.0, 12 * 3600.0, rules)
    assert cfg("--selector.relabel-config", rules).selector_relabel_config == rules
    # a bad selector, or both spellings: one line naming the flag, exit 2, nothing started
    conf = tmp_path / "objstore.yml"
    conf.write_text(f"type: FILESYSTEM\nconfig:\n  directory: {tmp_path / 'bucket'}\n")
    for bad in (["--selector.relabel-config", "- {action: labelmap, source_labels: [a]}"],
                ["--selector.relabel-config", rules,
                 f"--selector.relabel-config-file={tmp_path / 'sel.yml'}"]):
        with pytest.raises(SystemExit) as e:
            main(["store", "--objstore.config-file", str(conf), "--data-dir",
                  str(tmp_path / "data"), "--grpc-address", "127.0.0.1:0",
                  "--http-address", "127.0.0.1:0", *bad])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "--selector.relabel-config" in err and err.count("\n") == 1, err
        assert not (tmp_path / "data").exists()
