"""Cap'n Proto replication cost per request, relative to the protobuf (gRPC) path.

Not a test: run ``python bench/bench_capnp.py``. A request shaped like Prometheus's batches
(2,000 series x 1 sample, ~8 labels each; and 200 series x 10 samples). The ingestor's extra
work for capnp is unpacking + converting to a remote-write body before the same decode; the
router's is building the capnp message (symbol table) + packing.
"""
from __future__ import annotations

import struct

import cramjam

from bench_rwdecode import make_series
from bench_xor import best_of
from receiver import _rwdecode
from receiver.capnproto import _capnpc
from receiver.capnproto.wire import PackedFrames
from receiver.remotewrite import encode_write_request, snappy_compress


def main() -> None:
    for n_series, per in ((2000, 1), (200, 10)):
        body = encode_write_request(make_series(n_series, per))
        image = _capnpc.from_remote_write(body, b"tenant")
        framed = struct.pack("<IIQ", 0, len(image) // 8 + 1, 3 << 48) + image
        packed = _capnpc.pack(framed)

        def ingest_capnp():
            f = PackedFrames(1 << 30)
            f.feed(packed)
            _, b = _capnpc.to_remote_write(f.next(), 0, 0, 1 << 30)
            _rwdecode.decode_with_histograms(b)

        compressed = snappy_compress(body)
        t_decode = best_of(lambda: _rwdecode.decode_with_histograms(
            cramjam.snappy.decompress_raw(compressed)), 30)
        t_ingest = best_of(ingest_capnp, 30)
        t_router_pb = best_of(lambda: snappy_compress(body), 30)
        t_router_capnp = best_of(lambda: _capnpc.pack(_capnpc.from_remote_write(body, b"tenant")), 30)
        print(f"{n_series} series x {per}: protobuf {len(body)} B (snappy {len(snappy_compress(body))} B), "
              f"capnp packed {len(packed)} B | ingestor unsnappy+decode {t_decode * 1e3:.2f} ms, "
              f"capnp unpack+convert+decode {t_ingest * 1e3:.2f} ms ({t_ingest / t_decode:.2f}x) | "
              f"router snappy {t_router_pb * 1e3:.2f} ms, capnp build+pack {t_router_capnp * 1e3:.2f} ms "
              f"({t_router_capnp / t_router_pb:.2f}x)")


if __name__ == "__main__":
    main()
