"""When a reply's last byte arrived: an HTTP/1.1 client that reads the kernel's receive stamps.

Tests that check *ordering* across processes or threads — "no shadow call reaches the upstream
before the caller has its answer's last byte" — cannot use the time a thread got round to
reading the socket: a busy process (or its GIL) may read it milliseconds later. On Linux, the
kernel stamps every received segment (``SO_TIMESTAMPNS``); :func:`timed_post` asks for those
stamps and reports the last one on :func:`time.monotonic`'s clock, the clock the fake upstream
stamps arrivals with (:attr:`tierwise.testing.RecordedRequest.at`). Elsewhere it falls back to
the read time and says so (``kernel_stamped`` is ``False``). Requests are framed by ``h11``.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["TimedReply", "timed_post"]

#: Linux's ``SO_TIMESTAMPNS`` (also the ancillary ``SCM_TIMESTAMPNS``); Python has no name for it.
SO_TIMESTAMPNS = 35


@dataclass(frozen=True, slots=True)
class TimedReply:
    """A reply and when its last byte reached this machine, on ``time.monotonic()``'s clock."""

    status: int
    headers: dict[str, str]
    body: bytes
    last_byte_at: float
    kernel_stamped: bool


def timed_post(
    base_url: str, path: str, body: bytes, headers: Mapping[str, str], *, timeout_s: float = 30
) -> TimedReply:
    """POST *body* to ``base_url + path`` on a fresh connection; read the whole reply.

    ``last_byte_at`` is the kernel's receive stamp of the segment that completed the reply
    (Linux), converted to ``time.monotonic()``; elsewhere, when this thread read it.
    """
    import h11

    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    conn = h11.Connection(h11.CLIENT)
    sock = socket.create_connection((host, port), timeout=timeout_s)
    try:
        stamped = _stamp_receipts(sock)
        head = [("host", f"{host}:{port}"), ("content-length", str(len(body))), *headers.items()]
        sock.sendall(conn.send(h11.Request(method="POST", target=path, headers=head)))
        sock.sendall(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        status, got, chunks, last = 0, {}, [], 0.0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data, ancillary, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(16))
                last = _received_at(ancillary) if stamped else time.monotonic()
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
                got = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
    finally:
        sock.close()
    return TimedReply(status, got, b"".join(chunks), last, stamped)


def _stamp_receipts(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def _received_at(ancillary: list[tuple[int, int, bytes]]) -> float:
    offset = time.time() - time.monotonic()
    for level, kind, stamp in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(stamp) >= 16:
            sec, nsec = struct.unpack("qq", stamp[:16])
            return float(sec + nsec / 1e9 - offset)
    return time.monotonic()  # no stamp on this segment: when it was read (later, never earlier)
