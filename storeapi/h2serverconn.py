"""The server side of an HTTP/2 connection for gRPC: bytes in, events out, frames to send.

It keeps what the ``h2`` library kept for storeapi.h2server (stream states, both directions'
flow-control windows, the peer's settings, HPACK decoding) without h2's per-frame objects,
event classes and header validation passes, which cost a store about 1 ms per small call.
What a client sends is checked as RFC 9113 asks (stream ids, windows, frame sizes, header
list size); a breach ends the connection with GOAWAY (``ConnectionError`` from
``receive``) or the stream with RST_STREAM. Headers we send are fixed literals.
"""
from __future__ import annotations

from dataclasses import dataclass

import hpack

from storeapi._h2fast import reply
from storeapi._wire import one_stream
from storeapi.h2frames import (
    ACK, CONTINUATION, DATA, DEFAULT_FRAME, DEFAULT_WINDOW, END_STREAM,
    FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, GOAWAY, HEADERS, INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE, MAX_WINDOW, NO_ERROR, PADDED, PING,
    PREFACE, PROTOCOL_ERROR, PUSH_PROMISE, REFUSED_STREAM, RST_STREAM, SETTINGS,
    WINDOW_UPDATE, HeaderBlocks, HeaderDecoder, ProtocolError, frame, goaway, header_frames, parse_settings, rst_stream,
    settings_frame, split_frames, unpad, window_update)

MAX_HEADERS = 64 << 10  # largest header list (and header block) a client may send
STREAM_CLOSED = 0x5
KNOWN_BLOCKS = 16  # literal-only request header blocks kept decoded per connection

# Events: (REQUEST, sid, headers dict), (DATA_IN, sid, data, flow-controlled length),
# (ENDED, sid), (RESET, sid), (WINDOW, 0), (TERMINATED, 0).
REQUEST, DATA_IN, ENDED, RESET, WINDOW, TERMINATED = range(6)


class FirstFrameNotSettings(ProtocolError):
    """The client's first frame after the preface is not SETTINGS: grpc-go's server (Thanos's)
    closes such a connection at once, without a GOAWAY, and so do we."""


@dataclass
class _State:
    send_window: int
    recv_window: int
    remote_closed: bool = False
    local_closed: bool = False
    unacked: int = 0


class ServerConnection:
    """HTTP/2 state of one server connection (no I/O: ``receive`` bytes, ``data_to_send``)."""

    def __init__(self, max_concurrent_streams: int, window_bytes: int) -> None:
        self.max_streams = max_concurrent_streams
        self.window_bytes = window_bytes
        self.streams: dict[int, _State] = {}
        self.last_sid = 0  # highest stream id the client opened
        self.peer_window = DEFAULT_WINDOW  # the client's initial stream window
        self.max_outbound_frame_size = DEFAULT_FRAME
        self.send_window = DEFAULT_WINDOW  # connection send window
        self.recv_window = DEFAULT_WINDOW + window_bytes
        self.recv_unacked = 0
        self.decoder = HeaderDecoder(MAX_HEADERS, KNOWN_BLOCKS)
        self.blocks = HeaderBlocks(MAX_HEADERS)
        self.buf = bytearray()
        self.preface = False
        self.handshaken = False  # the preface and a SETTINGS frame came
        self.out: list[bytes] = []

    def initiate_connection(self) -> None:
        self.out.append(settings_frame({MAX_CONCURRENT_STREAMS: self.max_streams,
                                        INITIAL_WINDOW_SIZE: self.window_bytes,
                                        MAX_HEADER_LIST_SIZE: MAX_HEADERS}))
        self.out.append(window_update(0, self.window_bytes))

    def data_to_send(self) -> bytes:
        data = b"".join(self.out)
        self.out.clear()
        return data

    # --- in -----------------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[tuple]:
        """Events of the frames ``data`` completes; ProtocolError ends the connection (a
        GOAWAY is queued)."""
        self.buf += data
        events: list[tuple] = []
        try:
            if not self.preface:
                if len(self.buf) < len(PREFACE):
                    if not PREFACE.startswith(bytes(self.buf)):
                        raise ProtocolError("not an HTTP/2 connection preface")
                    return events
                if self.buf[:len(PREFACE)] != PREFACE:
                    raise ProtocolError("not an HTTP/2 connection preface")
                del self.buf[:len(PREFACE)]
                self.preface = True
            frames, used = split_frames(self.buf, DEFAULT_FRAME)
            del self.buf[:used]
            if frames and not self.handshaken and frames[0][0] != SETTINGS:
                raise FirstFrameNotSettings(f"first frame of type {frames[0][0]}, not SETTINGS")
            blocks = self.blocks
            for f in frames:
                typ = f[0]
                if blocks.pending is not None and typ != CONTINUATION:
                    raise ProtocolError("expected CONTINUATION")
                if typ == DATA:  # a call's frames, dispatched here: no step per frame
                    self._data(events, f[1], f[2], f[3])
                elif typ == HEADERS:
                    block = blocks.feed(HEADERS, f[1], f[2], f[3])
                    if block is not None:
                        self._headers(events, *block)
                else:
                    self._frame(events, *f)
        except FirstFrameNotSettings:
            raise
        except ProtocolError as e:
            self.out.append(goaway(self.last_sid, e.code))
            raise
        except (hpack.HPACKError, ValueError) as e:  # bad HPACK or header bytes
            self.out.append(goaway(self.last_sid, PROTOCOL_ERROR))
            raise ProtocolError(f"header block: {e}") from None
        return events

    def receive_call(self, data: bytes) -> tuple[int, dict[str, str], bytes, int] | None:
        """(stream id, headers, body, flow-controlled bytes) when ``data`` is exactly one new
        call -- HEADERS of a block decoded before while the dynamic table is empty, then one
        END_STREAM DATA frame, as our querier sends every StoreAPI call -- taken with the
        effects ``receive`` would have had (its REQUEST, DATA_IN and ENDED events); else None
        with nothing changed, and ``receive`` takes the read. Split in C (storeapi._wire's
        one_stream): the frame-by-frame path was a hundred Python lines per call."""
        if not self.handshaken or self.buf or self.blocks.pending is not None:
            return None
        got = one_stream(data, DEFAULT_FRAME, MAX_HEADERS)
        if got is None:
            return None
        sid, head, chunks, ndata, n, tail, ended = got
        if head is None or tail is not None or ndata != 1 or not ended or not sid % 2 \
                or sid <= self.last_sid or len(self.streams) >= self.max_streams \
                or n > self.recv_window or n > self.window_bytes \
                or self.decoder.decoder.header_table.dynamic_entries:
            return None
        headers = self.decoder.known.get(head)
        if headers is None:
            return None
        self.last_sid = sid
        self.recv_window -= n
        self.streams[sid] = _State(self.peer_window, self.window_bytes - n, remote_closed=True)
        return sid, dict(headers), chunks[0] if chunks else b"", n

    def _frame(self, events: list, typ: int, flags: int, sid: int, payload: bytes) -> None:
        """Frames other than DATA and HEADERS (``receive`` takes those)."""
        if typ == CONTINUATION:
            block = self.blocks.feed(typ, flags, sid, payload)
            if block is not None:
                self._headers(events, *block)
        elif typ == RST_STREAM:
            if not sid or sid > self.last_sid:
                raise ProtocolError("RST_STREAM on an idle stream")
            if len(payload) != 4:
                raise ProtocolError("RST_STREAM of a bad length", FRAME_SIZE_ERROR)
            if self.streams.pop(sid, None) is not None:
                events.append((RESET, sid))
        elif typ == SETTINGS:
            if sid:
                raise ProtocolError("SETTINGS on a stream")
            self.handshaken = True
            if not flags & ACK:
                self._settings(events, payload)
        elif typ == PING:
            if len(payload) != 8 or sid:
                raise ProtocolError("bad PING", FRAME_SIZE_ERROR)
            if not flags & ACK:
                self.out.append(frame(PING, ACK, 0, payload))
        elif typ == GOAWAY:
            events.append((TERMINATED, 0))
        elif typ == WINDOW_UPDATE:
            self._window_update(events, sid, payload)
        elif typ == PUSH_PROMISE:
            raise ProtocolError("PUSH_PROMISE from a client")
        # PRIORITY and unknown frame types are ignored

    def _headers(self, events: list, sid: int, flags: int, block: bytes) -> None:
        # Keeps the HPACK state; a block our client repeats every call is decoded once (the
        # hpack library's pure-Python decoding was a sizeable part of a small call's cost).
        headers = dict(self.decoder.decode(block))
        st = self.streams.get(sid)
        if st is not None:  # trailers: must end the stream
            if st.remote_closed or not flags & END_STREAM:
                raise ProtocolError("HEADERS on an open stream without END_STREAM")
            self._remote_end(sid, st)
            events.append((ENDED, sid))
            return
        if sid % 2 == 0 or sid <= self.last_sid:  # new streams: odd ids, increasing
            raise ProtocolError("bad stream id")
        self.last_sid = sid
        if len(self.streams) >= self.max_streams:
            self.out.append(rst_stream(sid, REFUSED_STREAM))
            return
        st = self.streams[sid] = _State(self.peer_window, self.window_bytes)
        events.append((REQUEST, sid, headers))
        if flags & END_STREAM:
            st.remote_closed = True
            events.append((ENDED, sid))

    def _remote_end(self, sid: int, st: _State) -> None:
        st.remote_closed = True
        if st.local_closed:
            del self.streams[sid]

    def _data(self, events: list, flags: int, sid: int, payload: bytes) -> None:
        if not sid or sid > self.last_sid:
            raise ProtocolError("DATA on an idle stream")
        n = len(payload)
        self.recv_window -= n
        if self.recv_window < 0:
            raise ProtocolError("connection window exceeded", FLOW_CONTROL_ERROR)
        st = self.streams.get(sid)
        if st is None or st.remote_closed:
            self.acknowledge_received_data(n, 0)  # a closed stream: only the connection's
            if st is not None:  # DATA after END_STREAM: the stream is reset, its call ends
                self.reset_stream(sid, STREAM_CLOSED)
                events.append((RESET, sid))
            return
        st.recv_window -= n
        if st.recv_window < 0:
            self.acknowledge_received_data(n, 0)
            self.reset_stream(sid, FLOW_CONTROL_ERROR)
            events.append((RESET, sid))
            return
        data = unpad(flags, payload) if flags & PADDED else payload
        events.append((DATA_IN, sid, data, n))
        if flags & END_STREAM:
            st.remote_closed = True  # as _remote_end
            if st.local_closed:
                del self.streams[sid]
            events.append((ENDED, sid))

    def _settings(self, events: list, payload: bytes) -> None:
        for key, value in parse_settings(payload):
            if key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolError("window too large", FLOW_CONTROL_ERROR)
                delta, self.peer_window = value - self.peer_window, value
                for st in self.streams.values():
                    st.send_window += delta
                    if st.send_window > MAX_WINDOW:
                        raise ProtocolError("window too large", FLOW_CONTROL_ERROR)
            elif key == MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value <= (1 << 24) - 1:
                    raise ProtocolError("bad SETTINGS_MAX_FRAME_SIZE")
                self.max_outbound_frame_size = value
        self.out.append(frame(SETTINGS, ACK, 0))
        events.append((WINDOW, 0))

    def _window_update(self, events: list, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolError("WINDOW_UPDATE of a bad length", FRAME_SIZE_ERROR)
        inc = int.from_bytes(payload, "big") & MAX_WINDOW
        if sid == 0:
            if not inc:
                raise ProtocolError("WINDOW_UPDATE of 0")
            self.send_window += inc
            if self.send_window > MAX_WINDOW:
                raise ProtocolError("connection window too large", FLOW_CONTROL_ERROR)
        else:
            if sid > self.last_sid:
                raise ProtocolError("WINDOW_UPDATE on an idle stream")
            st = self.streams.get(sid)
            if st is None:
                return
            st.send_window += inc
            if not inc or st.send_window > MAX_WINDOW:
                self.reset_stream(sid, PROTOCOL_ERROR if not inc else FLOW_CONTROL_ERROR)
                events.append((RESET, sid))
                return
        events.append((WINDOW, 0))

    def acknowledge_received_data(self, n: int, sid: int) -> None:
        """Give ``n`` bytes of window back (the connection's, and stream ``sid``'s if open),
        in WINDOW_UPDATEs of at least a quarter window."""
        self.recv_unacked += n
        if self.recv_unacked >= self.window_bytes // 4:
            self.recv_window += self.recv_unacked
            self.out.append(window_update(0, self.recv_unacked))
            self.recv_unacked = 0
        st = self.streams.get(sid) if sid else None
        if st is not None and not st.remote_closed:
            st.unacked += n
            if st.unacked >= self.window_bytes // 4:
                st.recv_window += st.unacked
                self.out.append(window_update(sid, st.unacked))
                st.unacked = 0

    # --- out ----------------------------------------------------------------------------------

    def send_headers(self, sid: int, block: bytes, end_stream: bool = False) -> None:
        """Headers (or trailers) on an open stream; nothing on one already reset."""
        if sid not in self.streams:
            return
        self.out.extend(header_frames(sid, block, self.max_outbound_frame_size, end_stream))
        st = self.streams.get(sid)
        if end_stream and st is not None:
            st.local_closed = True
            if st.remote_closed:
                del self.streams[sid]

    def send_reply(self, sid: int, headers: bytes, data: bytes, trailers: bytes) -> bool:
        """A whole answer -- headers, ``data`` in one DATA frame and trailers ending the
        stream -- queued as one piece when the flow-control windows and the peer's frame
        size allow (else False, nothing queued): a small call's answer without a frame
        builder call per frame."""
        st = self.streams.get(sid)
        n = len(data)
        limit = self.max_outbound_frame_size
        if st is None or st.local_closed or n > st.send_window or n > self.send_window \
                or n > limit or len(headers) > limit or len(trailers) > limit:
            return False
        st.send_window -= n
        self.send_window -= n
        self.out.append(reply(sid, headers, data, trailers))  # the three frames, built in C
        st.local_closed = True
        if st.remote_closed:
            del self.streams[sid]
        return True

    def local_flow_control_window(self, sid: int) -> int:
        st = self.streams.get(sid)
        return 0 if st is None else min(st.send_window, self.send_window)

    def send_data(self, sid: int, data: bytes) -> None:
        st = self.streams[sid]
        st.send_window -= len(data)
        self.send_window -= len(data)
        self.out.append(frame(DATA, 0, sid, data))

    def reset_stream(self, sid: int, code: int = NO_ERROR) -> None:
        """RST_STREAM for a stream the client has not finished sending on (else nothing)."""
        st = self.streams.pop(sid, None)
        if st is not None and not st.remote_closed or code != NO_ERROR:
            self.out.append(rst_stream(sid, code))

    def close_connection(self) -> None:
        self.out.append(goaway(self.last_sid, NO_ERROR))
