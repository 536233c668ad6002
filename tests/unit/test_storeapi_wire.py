"""storeapi._wire.series_response (the querier's C decoder of Series frames) against protobuf.

The reference is what the client did before: ``rpc_pb2.SeriesResponse.FromString`` and a Python
loop over labels and chunks. Generated frames (unicode labels, many chunks, histogram chunk
types, downsampled aggregates, batches, warnings, hints, unknown fields, repeated oneof members)
must decode the same (in both modes: raw chunks for queries, aggregates for series_aggr),
and fuzzed frames (truncations, bit flips, inserted bytes) must either decode the same or fail
in both, never crash.
"""
from __future__ import annotations

import random

import pytest
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.varint import read_uvarint, uvarint
from receiver.tsdb.histogram import EncodedChunk
from storeapi import labels_pb2, rpc_pb2, types_pb2
from storeapi._wire import series_response
from storeapi.client import _histogram_chunk
from storeapi.convert import labels_from_pb
from storeapi.server import AggrData

_XOR = types_pb2.Chunk.XOR
_HIST = (types_pb2.Chunk.HISTOGRAM, types_pb2.Chunk.FLOAT_HISTOGRAM)


def _reference(frame: bytes, chunks_of):
    """The pre-C client's decoding of one frame, as series_response gives it:
    ``chunks_of(pb chunks)`` -> (chunks, dropped) of one series."""
    resp = rpc_pb2.SeriesResponse.FromString(frame)
    kind = resp.WhichOneof("result")
    if kind == "warning":
        return 2, resp.warning, 0
    if kind not in ("series", "batch"):
        return 0, None, 0
    out: list = []
    dropped = 0
    for s in (resp.series,) if kind == "series" else resp.batch.series:
        lbls = labels_from_pb(s.labels)
        chunks, n = chunks_of(s.chunks)
        dropped += n
        if out and out[-1][0] == lbls:
            out[-1][1].extend(chunks)
        else:
            out.append((lbls, chunks))
    return 1, out, dropped


def reference(frame: bytes, native: bool):
    """StoreClient.iter_series before: raw XOR chunks (and native histograms if ``native``)."""
    def chunks_of(pbs):
        chunks, dropped = [], 0
        for c in pbs:
            raw = c.raw
            if raw.type == _XOR and raw.data:
                chunks.append((c.min_time, c.max_time, raw.data))
            elif raw.type in _HIST and raw.data and native:
                chunks.append((c.min_time, c.max_time, _histogram_chunk(raw.data, raw.type)))
            else:
                dropped += 1
        return chunks, dropped
    return _reference(frame, chunks_of)


def _xor_or_none(c: types_pb2.Chunk, present: bool) -> bytes | None:
    return c.data if present and c.type == _XOR and c.data else None


def reference_aggr(frame: bytes):
    """StoreClient.series_aggr before: raw XOR chunks and AggrData of downsampled ones."""
    def chunks_of(pbs):
        chunks = []
        for c in pbs:
            if c.HasField("raw"):
                if c.raw.type == _XOR and c.raw.data:
                    chunks.append((c.min_time, c.max_time, c.raw.data))
                continue
            ad = AggrData(*(_xor_or_none(getattr(c, f), c.HasField(f))
                            for f in ("count", "sum", "min", "max", "counter")))
            if ad != AggrData():
                chunks.append((c.min_time, c.max_time, ad))
        return chunks, 0
    return _reference(frame, chunks_of)


def _skip_group(buf: bytes, at: int, num: int) -> int:
    """Past the end of group ``num`` begun before ``at``, field by field as Go's protowire
    (Thanos's decoder) does: DecodeError on field number 0, ValueError on any other
    malformation."""
    while True:
        tag, at = read_uvarint(buf, at)
        n, wt = tag >> 3, tag & 7
        if n == 0:
            raise DecodeError("field number 0")
        if wt == 4:
            if n != num:
                raise ValueError("end group of another field")
            return at
        at = _skip_value(buf, at, n, wt)


def _skip_value(buf: bytes, at: int, num: int, wt: int) -> int:
    if wt == 0:
        return read_uvarint(buf, at)[1]
    if wt in (1, 5):
        return at + (8 if wt == 1 else 4)
    if wt == 2:
        n, at = read_uvarint(buf, at)
        return at + n
    if wt == 3:
        return _skip_group(buf, at, num)
    raise ValueError(f"wire type {wt}")


def go_checks_groups(buf: bytes, desc=rpc_pb2.SeriesResponse.DESCRIPTOR) -> None:
    """DecodeError where Go's protobuf refuses ``buf`` but upb (the reference) takes it: a
    field number 0 inside a group (upb skips unknown groups without looking at their field
    numbers; Go, and our C decoder, refuse it). Known message fields are walked into; any
    other malformation is left to the reference."""
    at = 0
    try:
        while at < len(buf):
            tag, at = read_uvarint(buf, at)
            num, wt = tag >> 3, tag & 7
            field = desc.fields_by_number.get(num)
            if wt == 3:
                at = _skip_group(buf, at, num)
            elif wt == 2 and field is not None and field.message_type is not None:
                n, at = read_uvarint(buf, at)
                go_checks_groups(buf[at:at + n], field.message_type)
                at += n
            else:
                at = _skip_value(buf, at, num, wt)
    except (ValueError, IndexError):
        pass  # malformed otherwise: the reference decides


def _norm(result):
    kind, payload, dropped = result
    if kind != 1:
        return result
    return kind, [(lbls, [(a, z, bytes(d), getattr(d, "encoding", None),
                           type(d) is EncodedChunk) for a, z, d in chunks])
                  for lbls, chunks in payload], dropped


def _outcome(frame: bytes, native: bool, prev=None):
    """("ok", normalized result) or ("error",) for the C decoder and the reference."""
    try:
        want = ("ok", _norm(reference(frame, native)))
        go_checks_groups(frame)
    except DecodeError:
        want = ("error",)
    try:
        got = ("ok", _norm(series_response(frame, prev, _histogram_chunk if native else None)))
    except ValueError:
        got = ("error",)
    return got, want


def _check(frame: bytes, prev=None) -> None:
    for native in (False, True):
        got, want = _outcome(frame, native, prev)
        assert got == want, frame.hex()
    try:
        want = ("ok", reference_aggr(frame))
        go_checks_groups(frame)
    except DecodeError:
        want = ("error",)
    try:
        kind, payload, _ = series_response(frame, prev, None, AggrData)
        got = ("ok", (kind, payload, 0))
    except ValueError:
        got = ("error",)
    assert got == want, frame.hex()


def test_a_field_number_0_in_a_group_is_refused_as_go_refuses_it():
    """Found by the fuzzed-frames test: upb takes a group of ``00 00`` pairs (field 0, a
    varint) and Go's protowire does not; the C decoder refuses it as Go does, and so does the
    reference check."""
    for h in ("4b0000000008004c22002200", "4b00004c", "0a044b00004c"):
        _check(bytes.fromhex(h))
        with pytest.raises(ValueError):
            series_response(bytes.fromhex(h), None, None)
    _check(bytes.fromhex("4b08004c"))  # a group of real fields: taken by both


# -- generated frames

def _field(num: int, body: bytes) -> bytes:
    return uvarint(num << 3 | 2) + uvarint(len(body)) + body


_unknown = st.one_of(
    st.builds(lambda n, v: uvarint(n << 3) + uvarint(v),
              st.integers(9, 5000), st.integers(0, 2**64 - 1)),
    st.builds(lambda n, b: _field(n, b), st.integers(9, 5000), st.binary(max_size=12)),
    st.builds(lambda n, b: uvarint(n << 3 | 1) + b, st.integers(9, 99), st.binary(min_size=8, max_size=8)),
    st.builds(lambda n, b: uvarint(n << 3 | 5) + b, st.integers(9, 99), st.binary(min_size=4, max_size=4)),
    st.builds(lambda n, v: uvarint(n << 3 | 3) + uvarint(1 << 3) + uvarint(v) + uvarint(n << 3 | 4),
              st.integers(9, 99), st.integers(0, 1000)),
)
_maybe_unknown = st.one_of(st.just(b""), _unknown)
_text = st.text(max_size=12)
_times = st.integers(-(2**63), 2**63 - 1)
_chunk_types = st.sampled_from([0, 0, 0, 1, 2, 3, -1, 2**31 - 1])


@st.composite
def _label(draw) -> bytes:
    body = labels_pb2.Label(name=draw(_text), value=draw(_text)).SerializeToString()
    return _field(1, body + draw(_maybe_unknown))


@st.composite
def _chunk(draw) -> bytes:
    c = types_pb2.AggrChunk(min_time=draw(_times), max_time=draw(_times))
    shape = draw(st.sampled_from(["raw", "raw", "raw", "none", "count", "raw_empty"]))
    if shape in ("raw", "raw_empty"):
        c.raw.type = draw(_chunk_types)
        c.raw.data = b"" if shape == "raw_empty" else draw(st.binary(min_size=1, max_size=20))
    elif shape == "count":  # downsampled: some of the aggregates, XOR or not, maybe empty
        for f in draw(st.lists(st.sampled_from(["count", "sum", "min", "max", "counter"]))):
            getattr(c, f).type = draw(_chunk_types)
            getattr(c, f).data = draw(st.binary(max_size=8))
    return _field(2, c.SerializeToString() + draw(_maybe_unknown))


@st.composite
def _series(draw, prefixes: list) -> bytes:
    if prefixes and draw(st.booleans()):  # sorted stores repeat their neighbours' labels
        labels = draw(st.sampled_from(prefixes))
    else:
        labels = b"".join(draw(st.lists(_label(), max_size=5)))
        prefixes.append(labels)
    chunks = b"".join(draw(st.lists(_chunk(), max_size=6)))
    return labels + chunks + draw(_maybe_unknown)


@st.composite
def _response(draw) -> bytes:
    prefixes: list = []
    kind = draw(st.sampled_from(["series", "batch", "batch", "warning", "hints", "empty"]))
    if kind == "series":
        body = _field(1, draw(_series(prefixes)))
    elif kind == "batch":
        body = _field(4, b"".join(_field(1, s) for s in draw(st.lists(_series(prefixes), max_size=6)))
                      + draw(_maybe_unknown))
    elif kind == "warning":
        body = rpc_pb2.SeriesResponse(warning=draw(st.text(max_size=30))).SerializeToString()
    elif kind == "hints":
        a = any_pb2.Any(type_url=draw(_text), value=draw(st.binary(max_size=10)))
        body = rpc_pb2.SeriesResponse(hints=a).SerializeToString()
    else:
        body = b""
    return draw(_maybe_unknown) + body + draw(_maybe_unknown)


_frames = st.lists(_response(), min_size=1, max_size=3).map(b"".join)  # merges, case switches
_fast = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))


@_fast
@given(_frames)
def test_generated_frames_decode_as_protobuf(frame):
    _check(frame)


@_fast
@given(_frames, st.data())
def test_fuzzed_frames_decode_as_protobuf_or_fail_cleanly(frame, data):
    buf = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["cut", "flip", "insert", "byte"]))
        if op == "cut" and buf:
            del buf[data.draw(st.integers(0, len(buf) - 1)):]
        elif op == "flip" and buf:
            buf[data.draw(st.integers(0, len(buf) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "byte" and buf:
            buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
        else:
            at = data.draw(st.integers(0, len(buf)))
            buf[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    _check(bytes(buf))


def test_random_bytes_never_crash():
    rng = random.Random(13)
    for _ in range(1000):
        _check(rng.randbytes(rng.randrange(0, 40)))


def test_many_chunks_and_unicode_labels():
    series = types_pb2.Series(labels=[labels_pb2.Label(name="__name__", value="x"),
                                      labels_pb2.Label(name="ü", value="日本語 ✓ \U0001F600")])
    for i in range(5000):
        series.chunks.add(min_time=i * 120_000, max_time=i * 120_000 + 119_000,
                          raw=types_pb2.Chunk(type=i % 3, data=bytes([i % 256]) * (1 + i % 7)))
    frame = rpc_pb2.SeriesResponse(series=series).SerializeToString()
    _check(frame)
    kind, payload, dropped = series_response(frame, None, None)
    assert (kind, len(payload), len(payload[0][1]), dropped) == (1, 1, 1667, 3333)


def test_invalid_utf8_label_is_rejected_as_protobuf_does():
    frame = _field(1, _field(1, _field(1, b"job") + _field(2, b"\xff\xfe")))
    with pytest.raises(DecodeError):
        rpc_pb2.SeriesResponse.FromString(frame)
    with pytest.raises(ValueError, match="malformed SeriesResponse frame"):
        series_response(frame, None, None)
    surrogate = _field(1, _field(1, _field(1, b"\xed\xa0\x80")))
    _check(surrogate)


def test_equal_strings_of_the_previous_series_are_reused():
    prev = (("__name__", "x"), ("job", "j1"))
    frame = rpc_pb2.SeriesResponse(batch=types_pb2.SeriesBatch(series=[
        types_pb2.Series(labels=[labels_pb2.Label(name=n, value=v) for n, v in ls])
        for ls in (prev, (("__name__", "x"), ("job", "j2")))])).SerializeToString()
    _check(frame, prev)
    _, payload, _ = series_response(frame, prev, None)
    assert [ls for ls, _ in payload] == [prev, (("__name__", "x"), ("job", "j2"))]
    assert payload[0][0][0][0] is prev[0][0] and payload[1][0][0][1] is prev[0][1]


def test_equal_label_pairs_of_the_previous_series_are_shared():
    """A pair equal to the previous series' pair at the same position is that very tuple (a
    sorted answer allocates only the pairs that change); a pair that differs, or sits at
    another position, is a new one with the right strings."""
    sets = [(("__name__", "b"), ("instance", "i-1"), ("le", "0.1")),
            (("__name__", "b"), ("instance", "i-1"), ("le", "1")),
            (("__name__", "b"), ("instance", "i-2"), ("le", "1")),
            (("__name__", "b"), ("le", "1"))]
    frame = rpc_pb2.SeriesResponse(batch=types_pb2.SeriesBatch(series=[
        types_pb2.Series(labels=[labels_pb2.Label(name=n, value=v) for n, v in ls])
        for ls in sets])).SerializeToString()
    _, payload, _ = series_response(frame, None, None)
    got = [ls for ls, _ in payload]
    assert got == sets
    assert got[1][0] is got[0][0] and got[1][1] is got[0][1] and got[1][2] is not got[0][2]
    assert got[2][0] is got[0][0] and got[2][1] is not got[1][1] and got[2][2] is got[1][2]
    assert got[3][0] is got[0][0] and got[3][1] is not got[2][2]
    prev = (("__name__", "b"), ("instance", "i-1"))  # the previous frame's last series
    _, again, _ = series_response(frame, prev, None)
    assert again[0][0][:2] == prev and again[0][0][0] is prev[0] and again[0][0][1] is prev[1]


def test_series_split_inside_one_batch_is_merged():
    part = types_pb2.Series(labels=[labels_pb2.Label(name="a", value="1")],
                            chunks=[types_pb2.AggrChunk(min_time=1, max_time=2,
                                                        raw=types_pb2.Chunk(data=b"\x00"))])
    frame = rpc_pb2.SeriesResponse(batch=types_pb2.SeriesBatch(
        series=[part, part, types_pb2.Series()])).SerializeToString()
    _check(frame)
    _, payload, _ = series_response(frame, None, None)
    assert [(ls, len(cs)) for ls, cs in payload] == [((("a", "1"),), 2), ((), 0)]


@pytest.mark.parametrize("frame", [
    b"\x00\x00",                                           # field number 0
    uvarint(9 << 3 | 3) + b"\x08\x01" + uvarint(9 << 3 | 4),   # an unknown group
    uvarint(9 << 3 | 3) + b"\x08\x01" + uvarint(10 << 3 | 4),  # a group ended by another
    uvarint(9 << 3 | 4),                                   # a stray end of group
    uvarint(9 << 3 | 3) * 100 + uvarint(9 << 3 | 4) * 100,  # as deep as protobuf allows
    uvarint(9 << 3 | 3) * 101 + uvarint(9 << 3 | 4) * 101,  # deeper
    b"\x80\x80\x80\x80\x10\x00",                           # a tag over 32 bits
    b"\x48" + b"\xff" * 10 + b"\x01",                      # a varint over 10 bytes
    b"\x08\x05",                                           # series with a varint wire type
    _field(1, _field(2, _field(3, b"\x08" + uvarint(2**32) + b"\x12\x01\x00"))),  # type % 2**32
    _field(3, _field(1, b"\xff")),                         # hints type_url not UTF-8
    _field(2, b"\xff"),                                    # warning not UTF-8
    _field(2, b"hi") + _field(1, b""),                     # the last oneof case wins
    _field(1, _field(1, _field(1, b"a"))) + _field(2, b"hi"),
    _field(1, _field(1, _field(1, b"\xff"))) + _field(2, b"hi"),  # a discarded part still parsed
])
def test_wire_format_corners_as_protobuf(frame):
    _check(frame)


def test_downsampled_chunks_decode_as_aggregates():
    agg = types_pb2.AggrChunk
    x = types_pb2.Chunk
    series = types_pb2.Series(labels=[labels_pb2.Label(name="a", value="1")], chunks=[
        agg(min_time=1, max_time=2, count=x(data=b"\x01"), sum=x(data=b"\x02")),
        agg(min_time=3, max_time=4, raw=x(data=b"\x03")),
        agg(min_time=5, max_time=6, raw=x()),                        # empty raw: nothing
        agg(min_time=7, max_time=8, counter=x(type=x.HISTOGRAM, data=b"\x04")),  # not XOR
        agg(min_time=9, max_time=10, max=x(data=b"\x05"))])
    frame = rpc_pb2.SeriesResponse(series=series).SerializeToString()
    _check(frame)
    assert series_response(frame, None, None, AggrData) == (1, [((("a", "1"),), [
        (1, 2, AggrData(count=b"\x01", sum=b"\x02")), (3, 4, b"\x03"),
        (9, 10, AggrData(max=b"\x05"))])], 0)


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)


@settings(max_examples=200, deadline=None)
@given(mint=st.integers(-(1 << 63), (1 << 63) - 1), maxt=st.integers(-(1 << 63), (1 << 63) - 1),
       matchers=st.lists(st.tuples(st.sampled_from(["=", "!=", "=~", "!~"]), _TEXT, _TEXT),
                         max_size=4),
       skip=st.booleans(), replicas=st.lists(_TEXT, max_size=3),
       limit=st.integers(0, 1 << 40), batch=st.integers(0, 1 << 20), partial=st.booleans())
def test_series_request_bytes_as_protobuf(mint, maxt, matchers, skip, replicas, limit, batch,
                                          partial):
    """The client's hand-built SeriesRequest is byte for byte what upb serializes."""
    from receiver.tsdb.labels import Matcher, MatchType
    from storeapi.convert import matchers_to_pb
    from storeapi.wire import series_request
    ms = [Matcher(MatchType(t), n, "x" if t in ("=~", "!~") else v) for t, n, v in matchers]
    strategy = types_pb2.WARN if partial else types_pb2.ABORT
    want = rpc_pb2.SeriesRequest(
        min_time=mint, max_time=maxt, matchers=matchers_to_pb(ms), skip_chunks=skip,
        without_replica_labels=replicas, limit=limit, response_batch_size=batch,
        partial_response_disabled=not partial, partial_response_strategy=strategy)
    assert series_request(mint, maxt, ms, skip, replicas, limit, batch, strategy,
                          not partial) == want.SerializeToString()


def test_matcher_fields_in_c_are_upbs_bytes_for_long_and_non_ascii_strings():
    """storeapi._wire.matcher_fields gives the SeriesRequest.matchers fields upb serializes,
    for names and values of every length class (one-, two- and three-byte varint lengths),
    non-ASCII and empty ones; a lone surrogate raises UnicodeEncodeError (as str.encode: the
    client then lets upb refuse the request), anything but Matchers an error, not bytes."""
    from types import SimpleNamespace

    from receiver.tsdb.labels import Matcher, MatchType
    from storeapi._wire import matcher_fields
    from storeapi.convert import matchers_to_pb
    strs = ["", "a", "é日本\U0001F600", "x" * 127, "y" * 128, "z" * 20_000]
    ms = [Matcher(t, n, v) for t in (MatchType.EQ, MatchType.NEQ) for n in strs for v in strs]
    ms += [Matcher(MatchType.RE, "job", "a.*" * 50), Matcher(MatchType.NRE, "", "b|c")]
    want = rpc_pb2.SeriesRequest(matchers=matchers_to_pb(ms)).SerializeToString()
    assert matcher_fields(ms) == want and matcher_fields(iter(ms)) == want
    assert matcher_fields([]) == b""
    with pytest.raises(UnicodeEncodeError):
        matcher_fields([Matcher(MatchType.EQ, "a", "b\ud800")])
    with pytest.raises(KeyError):
        matcher_fields([SimpleNamespace(type=SimpleNamespace(_value_="=="), name="a", value="b")])
    with pytest.raises(TypeError):
        matcher_fields([SimpleNamespace(type=MatchType.EQ, name=b"a", value="b")])
    with pytest.raises(AttributeError):
        matcher_fields([("=", "a", "b")])
    with pytest.raises(TypeError):
        matcher_fields(5)


def test_atomic_tuples_of_a_decoded_answer_are_left_out_of_the_gc():
    """Label pairs, label sets and XOR chunk tuples hold only strs, ints and bytes: the decoder
    untracks them (no collection walks them); the (labels, chunks) pair and chunk lists stay
    tracked, and so does a chunk tuple holding another object (a native histogram's)."""
    import gc
    xor = types_pb2.AggrChunk(min_time=1, max_time=2, raw=types_pb2.Chunk(data=b"\x00\x01"))
    hist = types_pb2.AggrChunk(min_time=3, max_time=4,
                               raw=types_pb2.Chunk(type=types_pb2.Chunk.HISTOGRAM, data=b"\x02"))
    frame = rpc_pb2.SeriesResponse(batch=types_pb2.SeriesBatch(series=[
        types_pb2.Series(labels=[labels_pb2.Label(name="a", value=v), labels_pb2.Label(name="b", value="c")],
                         chunks=[xor, hist]) for v in ("1", "2")])).SerializeToString()
    _, payload, _ = series_response(frame, None, lambda data, kind: [data, kind])
    assert len(payload) == 2
    for series in payload:
        lbls, chunks = series
        assert gc.is_tracked(series) and gc.is_tracked(chunks)
        assert not gc.is_tracked(lbls) and not any(gc.is_tracked(p) for p in lbls)
        assert not gc.is_tracked(chunks[0]) and gc.is_tracked(chunks[1])
    assert payload[1][0] == (("a", "2"), ("b", "c")) and payload[1][1][0] == (1, 2, b"\x00\x01")


def test_a_client_s_kept_request_encoding_serves_other_times_and_options_byte_for_byte():
    """StoreClient keeps the encoded SeriesRequest fields after the matchers per option set:
    a selector over other times, or other options, or a huge matcher, is still exactly what
    upb serializes."""
    from receiver.tsdb.labels import Matcher, MatchType
    from storeapi.client import StoreClient
    from storeapi.convert import matchers_to_pb
    client = StoreClient("127.0.0.1:1")
    ms = [Matcher(MatchType.EQ, "__name__", "x"), Matcher(MatchType.RE, "i", "a|b")]
    huge = [Matcher(MatchType.EQ, "v", "y" * 10_000)]
    for matchers in (ms, ms, huge, huge):
        for mint, maxt, skip, replicas, limit, partial in (
                (0, 5, False, (), 0, True), (-7, 1 << 40, False, (), 0, True),
                (3, 4, True, ("replica",), 0, False), (1, 2, False, (), 0, True),
                (1, 2, False, ["replica", ""], 300, True)):
            want = rpc_pb2.SeriesRequest(
                min_time=mint, max_time=maxt, matchers=matchers_to_pb(matchers),
                skip_chunks=skip, without_replica_labels=list(replicas), limit=limit,
                response_batch_size=256, partial_response_disabled=not partial,
                partial_response_strategy=types_pb2.WARN if partial else types_pb2.ABORT)
            assert client._series_request(mint, maxt, matchers, skip, replicas, limit,
                                          partial) == want.SerializeToString()
    assert len(client._request_tails) == 3  # three option sets
    long_names = ["r" * 5000]  # option fields this long are encoded each time, not kept
    assert client._series_request(1, 2, ms, False, long_names, 0, True) == rpc_pb2.SeriesRequest(
        min_time=1, max_time=2, matchers=matchers_to_pb(ms), without_replica_labels=long_names,
        response_batch_size=256, partial_response_strategy=types_pb2.WARN).SerializeToString()
    assert len(client._request_tails) == 3


@pytest.mark.parametrize("size", [1, 127, 128, 300, 16383, 16384, 70000])
def test_batch_of_frames_lengths_on_either_side_of_each_varint_width(size):
    """A SeriesBatch frame's length varint (two bytes written inline for most answers) reads
    back as protobuf's for bodies of 1, 2 and 3 varint bytes."""
    from storeapi.wire import SeriesEncoder

    frame = SeriesEncoder.series_response(
        types_pb2.Series(labels=[labels_pb2.Label(name="n", value="v" * size)])
        .SerializeToString())
    batch = SeriesEncoder.batch_of_frames([frame])
    msg = rpc_pb2.SeriesResponse.FromString(batch)
    assert [s.labels[0].value for s in msg.batch.series] == ["v" * size]
    assert batch[1:1 + len(uvarint(len(frame)))] == uvarint(len(frame))


@settings(max_examples=300, deadline=None)
@given(mint=st.one_of(st.integers(-(1 << 63), (1 << 63) - 1), st.integers(), st.sampled_from(
           [0, 1, -1, 127, 128, (1 << 63) - 1, -(1 << 63), 1 << 64, -(1 << 64), (1 << 64) + 5])),
       maxt=st.one_of(st.integers(-(1 << 63), (1 << 63) - 1), st.integers(),
                      st.sampled_from([0, 1, -1, 1 << 64])),
       rest=st.binary(max_size=300))
def test_with_times_is_the_python_time_fields_before_the_rest(mint, maxt, rest):
    """The client's C concatenation of a request's time fields and its kept rest is byte for
    byte the Python encoder's, for any int (zero omitted; beyond int64 taken modulo 2**64 as
    the Python varint does) and any rest, as bytes, bytearray or memoryview."""
    from storeapi._wire import with_times
    from storeapi.wire import series_request_times
    want = series_request_times(mint, maxt) + rest
    for r in (rest, bytearray(rest), memoryview(rest)):
        assert with_times(mint, maxt, r) == want


def test_with_times_takes_index_ints_and_refuses_other_types():
    import numpy as np
    from storeapi._wire import with_times
    from storeapi.wire import series_request_times
    assert with_times(np.int64(-5), True, b"r") == series_request_times(-5, 1) + b"r"
    assert with_times(False, np.uint64(1 << 63), b"") == series_request_times(0, 1 << 63)
    for bad in ((1.0, 2, b""), (1, "2", b""), (1, 2, "rest"), (None, 2, b""), (1, 2)):
        with pytest.raises(TypeError):
            with_times(*bad)


def test_a_reader_taking_the_whole_answer_keeps_what_feed_and_finish_give_in_order():
    """_SeriesReader.take/result (series_with_warnings) against feed/finish collected by
    hand: series split over frames merged, warnings in stream order, the dropped-chunks
    warning last, native histogram chunks kept or dropped, empty streams."""
    import random

    from storeapi.client import SeriesResult, _SeriesReader

    def frames(rng):
        out = []
        for k in range(rng.randrange(6)):
            lbls = [labels_pb2.Label(name="i", value=str(rng.randrange(3)))]
            if rng.random() < 0.2:
                out.append(rpc_pb2.SeriesResponse(warning=f"w{k}").SerializeToString())
                continue
            chunks = [types_pb2.AggrChunk(min_time=k, max_time=k + 1, raw=types_pb2.Chunk(
                type=rng.choice((types_pb2.Chunk.XOR, types_pb2.Chunk.XOR,
                                 types_pb2.Chunk.HISTOGRAM)), data=b"\x00\x01"))
                for _ in range(rng.randrange(1, 3))]
            out.append(rpc_pb2.SeriesResponse(series=types_pb2.Series(
                labels=lbls, chunks=chunks)).SerializeToString())
        return out

    def by_hand(reader, fs):
        out = SeriesResult([])
        for item in [reader.feed(f) for f in fs] + reader.finish():
            if isinstance(item, str):
                out.warnings.append(item)
            elif item is not None:
                out.series += item
        return out

    rng = random.Random(11)
    for _ in range(300):
        fs, hist = frames(rng), rng.random() < 0.5
        taker = _SeriesReader("a:1", hist)
        for f in fs:
            taker.take(f)
        assert taker.result() == by_hand(_SeriesReader("a:1", hist), fs)
