"""The head: series creation, postings with every matcher type, append statuses, ranges."""
from __future__ import annotations

import numpy as np

from receiver.tsdb.chunkenc import decode_many
from receiver.tsdb.head import DUPLICATE, OK, OUT_OF_ORDER, SAME_DUPLICATE, TOO_OLD, Head
from receiver.tsdb.labels import Matcher, encode_labels_key


def key(**kw) -> bytes:
    return encode_labels_key(tuple(sorted(kw.items())))


def make_head() -> tuple[Head, list[bytes]]:
    h = Head()
    keys = [key(__name__="up", job="a", instance="1"), key(__name__="up", job="b", instance="2"),
            key(__name__="req", job="a"), key(__name__="req", job="b", code="500")]
    refs, new_refs, new_keys = h.refs_for(keys)
    assert refs.tolist() == [0, 1, 2, 3] and new_refs.tolist() == [0, 1, 2, 3] and new_keys == keys
    again, new_again, _ = h.refs_for(list(reversed(keys)))
    assert again.tolist() == [3, 2, 1, 0] and len(new_again) == 0
    return h, keys


def names(h: Head, ms) -> list[str]:
    return [dict(h.labels(r)).get("__name__", "") + "/" + dict(h.labels(r)).get("job", "")
            for r in h.select_refs(ms).tolist()]


def test_matchers_hash_and_compare_by_fields_also_after_pickling_to_another_process():
    """Matchers key caches by (type, name, value); their hash is worked out once, so a matcher
    unpickled in a process with other string hashes must find the same entries."""
    import pickle
    import subprocess
    import sys

    ms = [Matcher("=", "job", "a"), Matcher("=~", "job", "a|b"), Matcher("!~", "code", "5.*")]
    assert [hash(m) for m in ms] == [hash((m.type, m.name, m.value)) for m in ms]
    assert {m: i for i, m in enumerate(ms)}[Matcher("=~", "job", "a|b")] == 1
    check = ("import pickle, sys; from receiver.tsdb.labels import Matcher; "
             "ms = pickle.loads(sys.stdin.buffer.read()); "
             "d = {m: i for i, m in enumerate(ms)}; "
             "print(d[Matcher('!~', 'code', '5.*')], ms[1].matches('b'), ms[2].matches('500'))")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", check], input=pickle.dumps(ms),
                             capture_output=True, env={"PYTHONHASHSEED": seed, "PYTHONPATH": "."},
                             timeout=60, check=True).stdout
        assert out.split() == [b"2", b"True", b"False"]


def test_postings_every_matcher_type():
    h, _ = make_head()
    assert names(h, [Matcher("=", "__name__", "up")]) == ["up/a", "up/b"]
    assert names(h, [Matcher("=", "job", "a"), Matcher("!=", "__name__", "up")]) == ["req/a"]
    assert names(h, [Matcher("=~", "job", "a|b"), Matcher("=~", "__name__", "r.*")]) == ["req/a", "req/b"]
    assert names(h, [Matcher("!~", "job", "a")]) == ["up/b", "req/b"]
    # A matcher on a missing label sees "": code="" selects series without a code label.
    assert names(h, [Matcher("=", "code", "")]) == ["up/a", "up/b", "req/a"]
    assert names(h, [Matcher("!=", "code", "")]) == ["req/b"]
    assert names(h, [Matcher("=~", "code", "5.*|")]) == ["up/a", "up/b", "req/a", "req/b"]
    assert names(h, [Matcher("=", "nope", "x")]) == []
    assert h.label_names() == ["__name__", "code", "instance", "job"]
    assert h.label_values("job") == ["a", "b"]
    assert h.label_values("job", [Matcher("=", "__name__", "req"), Matcher("=", "code", "500")]) == ["b"]


def test_append_statuses_and_query_ranges():
    h, _ = make_head()
    refs = np.array([0, 0, 0, 1], dtype=np.int64)
    st = h.append(refs, np.array([1000, 2000, 3000, 1000]), np.array([1.0, 2.0, 3.0, 5.0]))
    assert st.tolist() == [OK] * 4
    st = h.append(np.array([0, 0, 0, 1]), np.array([2500, 3000, 3000, 4000]),
                  np.array([9.0, 7.0, 3.0, 6.0]))
    assert st.tolist() == [OUT_OF_ORDER, DUPLICATE, SAME_DUPLICATE, OK]
    # Older than half a chunk range behind the newest sample is too old.
    st = h.append(np.array([2]), np.array([4000 - h.opts.chunk_range_ms // 2 - 1]), np.array([1.0]))
    assert st.tolist() == [TOO_OLD]
    assert (h.min_time, h.max_time) == (1000, 4000)
    series = h.series([Matcher("=", "__name__", "up")], 1500, 3500)
    # Selection is by chunk overlap, as in Prometheus; job b's chunk overlaps but has no sample.
    assert [dict(l)["job"] for l, _ in series] == ["a", "b"]
    ts, vals = decode_many([c[2] for c in series[0][1]], 1500, 3500)
    assert ts.tolist() == [2000, 3000] and vals.tolist() == [2.0, 3.0]
    assert len(decode_many([c[2] for c in series[1][1]], 1500, 3500)[0]) == 0
    assert h.series([Matcher("=", "__name__", "up")], 5000, 6000) == []


def test_restore_series_keeps_logged_refs():
    h = Head()
    k1, k2 = key(a="1"), key(a="2")
    assert h.restore_series([5, 2], [k1, k2]) == [5, 2]
    assert h.restore_series([9, 3], [k1, b"\x01a\x01\xff"]) == [5, -1]  # k1 logged twice: first ref
    refs, new, _ = h.refs_for([key(a="3")])
    assert refs.tolist() == [6] and new.tolist() == [6]
    assert names(h, [Matcher("=~", "a", ".+")]) == ["/", "/", "/"]


def test_postings_list_viewed_by_a_query_is_copied_not_grown():
    """A query may still hold the array a postings list gave it when a write adds a series
    under the same label: the write must succeed and the query's view must not change."""
    h, _ = make_head()
    held = h.select_refs([Matcher("=", "job", "a")])
    assert held.tolist() == [0, 2]
    refs, _, _ = h.refs_for([key(__name__="up", job="a", instance="9")])
    assert held.tolist() == [0, 2] and not held.flags.writeable
    assert h.select_refs([Matcher("=", "job", "a")]).tolist() == [0, 2, int(refs[0])]
    everything = h.select_refs([])
    h.refs_for([key(__name__="up", job="c")])
    assert len(everything) == 5 and len(h.select_refs([])) == 6


def test_postings_stay_sorted_and_unique_for_any_ref_order():
    from receiver.tsdb.postings import MemPostings
    p = MemPostings()
    p.add_many([5, 9], [(("a", "x"),), (("a", "x"),)])
    p.add_many([2, 7, 9, 0], [(("a", "x"),), (("a", "x"),), (("a", "x"),), None])
    assert p.select([Matcher("=", "a", "x")]).tolist() == [2, 5, 7, 9]
    assert p.all_refs().tolist() == [2, 5, 7, 9]  # a None label set is not indexed


def test_restore_series_with_gaps_as_a_checkpoint_logs_them():
    """A checkpoint holds only live series, so its refs ascend with gaps; new series created
    after the replay get refs above all of them, and every postings list is intact."""
    h = Head()
    keys = [key(__name__="m", i=str(i), job="j") for i in range(6)]
    assert h.restore_series([0, 3, 4, 10], keys[:4]) == [0, 3, 4, 10]
    assert h.restore_series([11, 12], [keys[4], keys[0]]) == [11, 0]  # keys[0] logged again
    assert h.num_series == 5 and h.series_created == 5
    refs, new, _ = h.refs_for([keys[5], keys[3]])
    assert refs.tolist() == [12, 10] and new.tolist() == [12]
    assert h.select_refs([Matcher("=", "job", "j")]).tolist() == [0, 3, 4, 10, 11, 12]
    assert [dict(h.labels(r))["i"] for r in [0, 3, 4, 10, 11, 12]] == ["0", "1", "2", "3", "4", "5"]
    assert h.key(5) is None and h.key(10) == keys[3]


def test_series_batch_path_gives_the_per_series_answer():
    """Head.series decodes labels and fetches chunks for all selected series in one C call
    each; the answer is the per-ref one: labels, chunks in range, empty series left out."""
    h = Head()
    keys = [key(__name__="m", job=j, i=str(i)) for i in range(50) for j in ("a", "é")]
    refs, _, _ = h.refs_for(keys)
    live = refs[::3]  # the others have no samples
    h.append(np.repeat(live, 3), np.tile(np.array([1000, 2000, 3000]), len(live)),
             np.arange(3 * len(live), dtype=np.float64))
    ms = [Matcher("=", "__name__", "m")]
    want = sorted((h.labels(r), h._chunks.chunks(r, 1500, 2500)) for r in live.tolist())
    assert h.series(ms, 1500, 2500) == want
    assert h.series(ms, 1500, 2500, skip_chunks=True) == [(l, []) for l, _ in want]
    assert h.labels_many(live.tolist()) == [h.labels(r) for r in live.tolist()]
