"""A closed-loop HTTP/1.1 load generator on raw keep-alive sockets.

It runs as its own process so that its CPU use is its own and can be
reported. Standard library only (no ccag import, no SDK): one selector loop
drives every connection, sends a request prepared once as bytes, and reads
the response only as far as HTTP framing needs (status line, content-length
or chunk sizes); the body is skipped, never parsed or kept.

Usage: ``python perf/loadgen.py SPEC.json``; prints one JSON object.

The spec (JSON object):
    host, port: where to connect.
    request_file: a file holding the whole raw request (head and body).
    concurrency: connections, each with one request in flight.
    mode: ``"rate"`` (closed loop for ``warmup`` then ``duration`` seconds, or
        until ``requests`` have completed) or ``"hold"`` (open ``concurrency``
        requests, wait until every one has received its first body bytes,
        measure, close them all).
    watch_pids: {name: pid} whose CPU time and memory are read from /proc at
        the edges of the measured window.

Theory of operation: a request's clock starts when its first byte is handed
to the kernel. Time to first byte ends at the first byte of the response
(status line); total time at the last byte of the body. Only requests that
finish inside the measured window count, so the warm-up and the tail of
in-flight requests at the end are left out of every number.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import socket
import sys
import time
from typing import Any

# One recv asks for this much: a whole streamed reply usually fits.
RECV_BYTES = 256 * 1024

# How long the loop waits for in-flight requests after the window closes
# before it gives up on them; they are not counted either way.
DRAIN_SECONDS = 10.0

# How long a ``hold`` run waits for every stream to show its first bytes.
HOLD_READY_SECONDS = 60.0

# The settle time before memory is read in a ``hold`` run: lets the gateway
# finish the bookkeeping of the last streams that arrived.
HOLD_SETTLE_SECONDS = 1.0

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

_HEAD = 0
_SIZED = 1
_CHUNK_SIZE = 2
_CHUNK_DATA = 3
_CHUNK_END = 4
_CLOSE_DELIMITED = 5


class ResponseFailed(Exception):
    """A response that is not 2xx or whose framing cannot be read."""


def proc_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as file:
        fields = file.read().rsplit(b")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def proc_runqueue_wait_seconds(pid: int) -> float:
    """Time a process (all its threads) waited for a CPU while runnable.

    From /proc/<pid>/schedstat (second field, nanoseconds; main thread).
    On a shared machine this is where latency hides that no profile shows.
    """
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as file:
            return int(file.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in KiB, from /proc/<pid>/status."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status", "rb") as file:
        for line in file:
            if line.startswith((b"VmRSS:", b"VmHWM:")):
                name, value = line.split(b":", 1)
                found[name.decode()] = int(value.split()[0])
    return found


def read_watched(pids: dict[str, int]) -> dict[str, Any]:
    return {
        name: {
            "cpu_s": proc_cpu_seconds(pid),
            "wait_s": proc_runqueue_wait_seconds(pid),
            **proc_memory_kb(pid),
        }
        for name, pid in pids.items()
    }


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Client:
    """One keep-alive connection with at most one request in flight."""

    __slots__ = (
        "address", "buffer", "first_at", "is_done", "outgoing", "remaining",
        "request", "selector", "sent_at", "sock", "state", "status",
    )

    def __init__(self, address: tuple[str, int], request: bytes, selector: Any) -> None:
        self.address = address
        self.request = request
        self.selector = selector
        self.sock: socket.socket | None = None
        self.state = _HEAD
        self.buffer = bytearray()
        self.outgoing = memoryview(b"")
        self.remaining = 0
        self.status = 0
        self.sent_at = 0.0
        self.first_at = 0.0
        self.is_done = False

    def connect(self) -> None:
        sock = socket.create_connection(self.address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.sock = sock
        self.selector.register(sock, selectors.EVENT_READ, self)

    def close(self) -> None:
        if self.sock is not None:
            self.selector.unregister(self.sock)
            self.sock.close()
            self.sock = None

    def start(self, now: float) -> None:
        """Send the request (what the kernel does not take now is sent later)."""
        if self.sock is None:
            self.connect()
        self.state = _HEAD
        self.buffer.clear()
        self.status = 0
        self.first_at = 0.0
        self.is_done = False
        self.sent_at = now
        self.outgoing = memoryview(self.request)
        self.flush()

    def flush(self) -> None:
        assert self.sock is not None
        try:
            sent = self.sock.send(self.outgoing)
        except BlockingIOError:
            sent = 0
        self.outgoing = self.outgoing[sent:]
        events = selectors.EVENT_READ
        if self.outgoing:
            events |= selectors.EVENT_WRITE
        self.selector.modify(self.sock, events, self)

    def on_readable(self, now: float) -> bool:
        """Read what arrived; True when the response is complete."""
        assert self.sock is not None
        try:
            data = self.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return False
        except ConnectionError as exc:
            raise ResponseFailed(f"connection broke: {exc}") from None
        if not data:
            self.close()
            if self.state == _CLOSE_DELIMITED:
                self.is_done = True
                return True
            raise ResponseFailed("the server closed the connection mid-response")
        if not self.first_at:
            self.first_at = now
        self.feed(data)
        return self.is_done

    def feed(self, data: bytes) -> None:
        if self.state == _HEAD:
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.start_body(bytes(self.buffer[:end]))
            data = bytes(self.buffer[end + 4 :])
            self.buffer.clear()
        if self.state == _SIZED:
            self.remaining -= len(data)
            if self.remaining <= 0:
                self.is_done = True
        elif self.state != _CLOSE_DELIMITED:
            self.feed_chunked(data)

    def start_body(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        self.status = int(parts[1])
        if self.status == 100:
            # An interim response: the real one follows.
            return
        length = None
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if not 200 <= self.status < 300:
            raise ResponseFailed(f"HTTP {self.status}")
        if chunked:
            self.state = _CHUNK_SIZE
        elif length is not None:
            self.state = _SIZED
            self.remaining = length
            if length == 0:
                self.is_done = True
        else:
            self.state = _CLOSE_DELIMITED

    def feed_chunked(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        position = 0
        size = len(buffer)
        while position < size:
            if self.state == _CHUNK_DATA:
                take = min(self.remaining, size - position)
                position += take
                self.remaining -= take
                if self.remaining == 0:
                    self.state = _CHUNK_SIZE
                continue
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                break
            if self.state == _CHUNK_END:
                # The blank line after the last chunk (no trailers are sent).
                self.is_done = True
                position = line_end + 2
                break
            chunk_size = int(bytes(buffer[position:line_end]).split(b";", 1)[0], 16)
            position = line_end + 2
            if chunk_size == 0:
                self.state = _CHUNK_END
            else:
                self.state = _CHUNK_DATA
                self.remaining = chunk_size + 2
        del buffer[:position]


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def summarize_ms(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {
        "p50": _ms(percentile(ordered, 0.50)),
        "p99": _ms(percentile(ordered, 0.99)),
        "max": _ms(ordered[-1] if ordered else None),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def run_rate(spec: dict[str, Any], request: bytes) -> dict[str, Any]:
    """Closed loop: every connection sends its next request when one ends."""
    selector = selectors.DefaultSelector()
    address = (spec["host"], spec["port"])
    pids: dict[str, int] = spec.get("watch_pids", {})
    warmup = float(spec.get("warmup", 0.0))
    duration = float(spec.get("duration", 0.0))
    limit = spec.get("requests")

    clients = [Client(address, request, selector) for _ in range(spec["concurrency"])]
    for client in clients:
        client.connect()

    started = time.perf_counter()
    window_start = started + warmup
    window_end = window_start + duration if duration else float("inf")
    measuring = warmup <= 0
    before = read_watched(pids) if measuring else None
    own_before = own_cpu_seconds()
    if measuring:
        window_start = time.perf_counter()
    for client in clients:
        client.start(time.perf_counter())

    ttfb: list[float] = []
    total: list[float] = []
    errors: list[str] = []
    in_flight = len(clients)
    stopping = False
    deadline = float("inf")
    after = None
    own_after = 0.0
    window_closed_at = 0.0

    while in_flight:
        now = time.perf_counter()
        if not measuring and now >= window_start:
            measuring = True
            before = read_watched(pids)
            own_before = own_cpu_seconds()
            window_start = now
        if measuring and not stopping and (
            now >= window_end or (limit is not None and len(total) >= limit)
        ):
            stopping = True
            after = read_watched(pids)
            own_after = own_cpu_seconds()
            window_closed_at = now
            deadline = now + DRAIN_SECONDS
        if now > deadline:
            errors.append(f"{in_flight} requests still in flight after the drain")
            break

        for key, mask in selector.select(timeout=0.05):
            client = key.data
            now = time.perf_counter()
            try:
                if mask & selectors.EVENT_WRITE:
                    client.flush()
                if not mask & selectors.EVENT_READ or not client.on_readable(now):
                    continue
            except (ResponseFailed, ValueError, OSError) as exc:
                errors.append(str(exc))
                client.close()
                if stopping:
                    in_flight -= 1
                else:
                    client.start(now)
                continue

            if measuring and not stopping and client.sent_at >= window_start:
                ttfb.append(client.first_at - client.sent_at)
                total.append(now - client.sent_at)
            if stopping:
                in_flight -= 1
            else:
                client.start(now)

    for client in clients:
        client.close()
    selector.close()

    window = max(window_closed_at - window_start, 1e-9)
    result: dict[str, Any] = {
        "completed": len(total),
        "window_s": round(window, 4),
        "rps": round(len(total) / window, 2),
        "ttfb_ms": summarize_ms(ttfb),
        "total_ms": summarize_ms(total),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
        "loadgen_cpu_s": round(own_after - own_before, 4),
        "processes": {},
    }
    if before is not None and after is not None:
        for name in pids:
            cpu = after[name]["cpu_s"] - before[name]["cpu_s"]
            wait = after[name]["wait_s"] - before[name]["wait_s"]
            result["processes"][name] = {
                "cpu_s": round(cpu, 4),
                "cpu_ms_per_request": round(1000.0 * cpu / len(total), 4) if total else None,
                "runqueue_wait_ms_per_request": round(1000.0 * wait / len(total), 4) if total else None,
                "rss_kb": after[name]["VmRSS"],
                "hwm_kb": after[name]["VmHWM"],
            }
    return result


def run_hold(spec: dict[str, Any], request: bytes) -> dict[str, Any]:
    """Hold ``concurrency`` streams open at once and read memory meanwhile."""
    selector = selectors.DefaultSelector()
    address = (spec["host"], spec["port"])
    pids: dict[str, int] = spec.get("watch_pids", {})
    time.sleep(HOLD_SETTLE_SECONDS)
    before = read_watched(pids)

    clients = [Client(address, request, selector) for _ in range(spec["concurrency"])]
    for client in clients:
        client.start(time.perf_counter())

    waiting = set(clients)
    errors: list[str] = []
    deadline = time.perf_counter() + HOLD_READY_SECONDS
    while waiting and time.perf_counter() < deadline:
        for key, mask in selector.select(timeout=0.05):
            client = key.data
            try:
                if mask & selectors.EVENT_WRITE:
                    client.flush()
                if mask & selectors.EVENT_READ:
                    client.on_readable(time.perf_counter())
            except (ResponseFailed, ValueError, OSError) as exc:
                errors.append(str(exc))
                client.close()
                waiting.discard(client)
                continue
            if client.status and client.state != _HEAD:
                waiting.discard(client)

    time.sleep(HOLD_SETTLE_SECONDS)
    during = read_watched(pids)
    ready = len(clients) - len(waiting) - len(errors)
    for client in clients:
        client.close()
    selector.close()

    return {
        "streams": len(clients),
        "ready": ready,
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
        "before": before,
        "during": during,
    }


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as file:
        spec = json.load(file)
    with open(spec["request_file"], "rb") as file:
        request = file.read()
    if spec["mode"] == "hold":
        result = run_hold(spec, request)
    else:
        result = run_rate(spec, request)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
