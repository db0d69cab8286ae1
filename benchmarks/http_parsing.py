"""The upstream client's per-exchange HTTP work: llhttp (``httptools``, shipped) against ``h11``.

One exchange is what :class:`tierwise.gateway.http.FastTransport` does around the network: frame
a POST with the gateway's usual headers, then parse a typical JSON answer (status line, five
headers, a 600-byte body) — and a chunked SSE answer of 40 events. The shipped path
(``gateway/http.py``'s request builder and its llhttp-driven reader) is timed against the same
work done with ``h11``, the library the client used before, in the same run.

Run: ``.venv/bin/python benchmarks/http_parsing.py [--n 20000]``.
"""

from __future__ import annotations

import argparse
import timeit

import h11

from tierwise.gateway import http

HEADERS = {
    "authorization": "Bearer sk-bench-0123456789abcdef",
    "content-type": "application/json",
    "anthropic-version": "2023-06-01",
    "user-agent": "tierwise",
}
BODY = b'{"model": "m", "messages": [{"role": "user", "content": "hello"}]}'
JSON_REPLY = (
    b"HTTP/1.1 200 OK\r\ndate: Mon, 30 Nov 2026 02:13:31 GMT\r\nserver: uvicorn\r\n"
    b"content-length: 600\r\ncontent-type: application/json\r\nx-request-id: req_1\r\n\r\n"
    + b"x"
    * 600
)
_EVENT = b'data: {"type": "content_block_delta", "delta": {"text": "word "}}\n\n'
SSE_REPLY = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    + b"".join(b"%x\r\n%s\r\n" % (len(_EVENT), _EVENT) for _ in range(40))
    + b"0\r\n\r\n"
)


def with_h11(reply: bytes) -> bytes:
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="POST",
        target="/v1/messages",
        headers=[("host", "127.0.0.1:8000"), ("content-length", str(len(BODY))), *HEADERS.items()],
    )
    _ = conn.send(request), conn.send(h11.Data(data=BODY)), conn.send(h11.EndOfMessage())
    conn.receive_data(reply)
    head = conn.next_event()
    assert isinstance(head, h11.Response)
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in head.headers}
    parts = []
    while True:
        event = conn.next_event()
        if type(event) is h11.Data:
            parts.append(event.data)
        elif type(event) is h11.EndOfMessage:
            break
    conn.start_next_cycle()
    assert headers
    return b"".join(parts)


TARGET = http.FastTransport()._parse("http://127.0.0.1:8000/v1/messages")


def shipped(reply: bytes) -> bytes:
    _ = http._request(TARGET, BODY, HEADERS)
    reading = http._Reading()
    reading.feed(reply)
    assert reading.head and reading.complete
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in reading.raw_headers}
    assert headers
    return b"".join(reading.body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="exchanges per measurement")
    args = parser.parse_args()
    print(f"{'reply':6} {'h11 µs':>8} {'llhttp µs':>10} {'llhttp / h11':>13}")
    for name, reply in (("json", JSON_REPLY), ("sse", SSE_REPLY)):
        assert with_h11(reply) == shipped(reply)  # the same body either way
        old = min(timeit.repeat(lambda r=reply: with_h11(r), number=args.n, repeat=3)) / args.n
        new = min(timeit.repeat(lambda r=reply: shipped(r), number=args.n, repeat=3)) / args.n
        print(f"{name:6} {old * 1e6:8.1f} {new * 1e6:10.1f} {new / old:12.2f}x")


if __name__ == "__main__":
    main()
