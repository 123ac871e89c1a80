"""What one event costs any relay on this machine, before ccag's own work.

A streamed answer reaches the gateway as one small frame per upstream read
whenever Bedrock (or the simulator) is not far ahead of it, and each frame
costs a wake-up, a read and a client write. This benchmark measures that
floor with ccag's HTTP, auth, JSON and spend work taken away, so the end to
end figures of ``perf/bench.py`` can be read against it:

* ``epoll``: a stdlib ``select.epoll`` loop that reads a frame and writes it
  on (no Trio): the kernel's share (loopback TCP, wake-ups) plus a little
  Python;
* ``trio``: the same relay as Trio tasks over ``trio.SocketStream``;
* ``lean``: Trio tasks over ccag's :class:`ccag.server.fastio.LeanSocketStream`;
* ``ccag-relay``: the lean relay plus ccag's per-event work: the chunked body
  decoder and the event stream to SSE translator, with HTTP/1.1 chunk framing
  of the output, as the gateway runs them.

A feeder process (on the other CPU) writes real Bedrock chunk frames (a
50-delta reply, chunked as Bedrock frames them) on ``STREAMS`` connections,
one frame per write with a pause between frames so that each lands alone, and
drains the relayed bytes. The relay process is pinned to its own CPU and
reports its user and system CPU seconds; the result is CPU microseconds per
event and the most 55-frame streams per second one core could relay at that
cost with nothing else to do.

Run: ``python perf/bench_floor.py`` (about half a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from typing import Any

# Concurrent streams, as in the end to end benchmark's 16-client case.
STREAMS = 16

# How many replies' worth of text deltas each stream carries.
REPLIES_PER_STREAM = 40

# The pause after each round of one frame per stream: long enough that the
# relay has read the round (so each read carries one frame), short enough to
# finish quickly; 16 streams at this pace offer at most 16,000 frames/s.
ROUND_GAP_SECONDS = 0.001

# The events of one answer in the end to end benchmark (50 text deltas and
# the five around them): what "streams per second" is counted in.
REPLY_EVENTS = 55

READ_SIZE = 64 * 1024
RELAYS = ("epoll", "trio", "lean", "ccag-relay")


def chunked_frames(replies: int) -> list[bytes]:
    """One stream's frames, each framed as one HTTP/1.1 chunk.

    The reply of perf/bench_protocol.py with its 50 text deltas repeated
    ``replies`` times: one long answer, so that a translator reads it as one
    stream (a real stream ends at its message_stop).
    """
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_protocol import reply_frames

    reply = reply_frames()
    frames = reply[:2] + reply[2:-3] * replies + reply[-3:]
    return [b"%x\r\n%s\r\n" % (len(frame), frame) for frame in frames]


# --- the relays (each runs in its own process; see main) ---


def relay_epoll(pairs: list[tuple[socket.socket, socket.socket]]) -> int:
    reads = 0
    poller = select.epoll()
    by_fd = {}
    for upstream, client in pairs:
        upstream.setblocking(False)
        poller.register(upstream.fileno(), select.EPOLLIN)
        by_fd[upstream.fileno()] = client
    open_count = len(pairs)
    while open_count:
        for fd, _ in poller.poll():
            data = os.read(fd, READ_SIZE)
            reads += 1
            if not data:
                poller.unregister(fd)
                by_fd[fd].close()
                open_count -= 1
                continue
            by_fd[fd].sendall(data)
    return reads


def relay_trio(pairs: list[tuple[socket.socket, socket.socket]], kind: str) -> int:
    import trio

    from ccag.server.fastio import LeanSocketStream

    def wrap(sock: socket.socket) -> trio.abc.Stream:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        return stream if kind == "trio" else LeanSocketStream(stream)

    reads = 0

    async def pump(upstream: trio.abc.Stream, client: trio.abc.Stream) -> None:
        nonlocal reads
        translator = _translator() if kind == "ccag-relay" else None
        while True:
            data = await upstream.receive_some(READ_SIZE)
            reads += 1
            if not data:
                await client.aclose()
                return
            if translator is not None:
                decoder, translate = translator
                sse = translate.feed(decoder.feed(data)).sse
                data = b"%x\r\n%s\r\n" % (len(sse), sse) if sse else b""
            if data:
                await client.send_all(data)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for upstream, client in pairs:
                nursery.start_soon(pump, wrap(upstream), wrap(client))

    trio.run(main)
    return reads


def _translator() -> tuple[Any, Any]:
    from ccag.anthropic.observe import ResponseObserver
    from ccag.anthropic.stream import BedrockStreamTranslator
    from ccag.bedrock.chunked import ChunkedDecoder

    return ChunkedDecoder(), BedrockStreamTranslator("m", ResponseObserver())


def run_relay(kind: str, port: int) -> None:
    """The relay process: accept STREAMS pairs, relay, print CPU seconds."""
    listener = socket.create_server(("127.0.0.1", port))
    print("ready", flush=True)
    pairs = []
    for _ in range(STREAMS):
        upstream, _ = listener.accept()
        client, _ = listener.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pairs.append((upstream, client))
    started = os.times()
    reads = relay_epoll(pairs) if kind == "epoll" else relay_trio(pairs, kind)
    ended = os.times()
    used = {"user": ended.user - started.user, "system": ended.system - started.system}
    print(json.dumps({**used, "reads": reads - STREAMS}))  # less each stream's EOF read


# --- the feeder (this process) ---


def feed(port: int, frames: list[bytes]) -> tuple[int, float]:
    """Connect STREAMS pairs, send every frame, drain; (events, seconds)."""
    pairs = []
    for _ in range(STREAMS):
        upstream = socket.create_connection(("127.0.0.1", port))
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = socket.create_connection(("127.0.0.1", port))
        pairs.append((upstream, client))

    def send() -> None:
        # Round robin: one frame on every stream, then a pause, so each read
        # of the relay finds one frame as long as it keeps up.
        for frame in frames:
            for upstream, _ in pairs:
                upstream.sendall(frame)
            time.sleep(ROUND_GAP_SECONDS)
        for upstream, _ in pairs:
            upstream.shutdown(socket.SHUT_WR)

    received: list[int] = []
    events_seen: list[int] = []

    def drain(client: socket.socket) -> None:
        tail = b""
        size = events = 0
        while data := client.recv(READ_SIZE):
            size += len(data)
            # Count SSE events across read boundaries (the marker is 7 bytes).
            events += (tail + data).count(b"event: ")
            tail = data[-6:]
        received.append(size)
        events_seen.append(events)

    started = time.monotonic()
    threads = [threading.Thread(target=send)]
    threads += [threading.Thread(target=drain, args=(client,)) for _, client in pairs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for upstream, client in pairs:
        upstream.close()
        client.close()
    seconds = time.monotonic() - started

    # Every frame must have come through: bytes as sent, or one SSE event each.
    sent = sum(len(frame) for frame in frames)
    if not all(size == sent for size in received) and not all(
        count == len(frames) for count in events_seen
    ):
        raise RuntimeError(
            f"frames lost: sent {sent} bytes per stream, got {received} bytes, {events_seen} events"
        )
    return STREAMS * len(frames), seconds


def measure(kind: str, relay_cpu: str, frames: list[bytes]) -> dict[str, float]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, __file__, "--serve", kind, "--port", str(port)]
    if relay_cpu:
        command = ["taskset", "-c", relay_cpu, *command]
    relay = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert relay.stdout is not None
    if relay.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the {kind} relay did not start")
    events, seconds = feed(port, frames)
    output, _ = relay.communicate(timeout=60)
    cpu = json.loads(output)
    per_event = (cpu["user"] + cpu["system"]) / events * 1e6
    per_read = (cpu["user"] + cpu["system"]) / max(cpu["reads"], 1) * 1e6
    return {
        "events": events,
        "user_us_per_event": cpu["user"] / events * 1e6,
        "system_us_per_event": cpu["system"] / events * 1e6,
        "us_per_event": per_event,
        "frames_per_read": events / max(cpu["reads"], 1),
        "us_per_read": (cpu["user"] + cpu["system"]) / max(cpu["reads"], 1) * 1e6,
        # If every event of an answer came in a read of its own.
        "streams_per_second_per_core": 1e6 / (per_read * REPLY_EVENTS),
        "wall_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=RELAYS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--relays", default=",".join(RELAYS))
    parser.add_argument("--relay-cpu", default="0" if (os.cpu_count() or 1) > 1 else "")
    parser.add_argument("--replies", type=int, default=REPLIES_PER_STREAM, help="replies per stream")
    parser.add_argument("--output", help="also write the results as JSON here")
    args = parser.parse_args()
    if args.serve:
        run_relay(args.serve, args.port)
        return

    frames = chunked_frames(args.replies)
    if args.relay_cpu:
        os.sched_setaffinity(0, {cpu for cpu in range(os.cpu_count() or 1)} - {int(args.relay_cpu)})
    results = {}
    print(f"{STREAMS} streams x {len(frames)} frames, one frame per write")
    print(
        f"{'relay':12} {'user us':>8} {'sys us':>8} {'us/event':>9} {'frames/read':>12} "
        f"{'us/read':>8} {'55-event streams/s, one event per read':>39}"
    )
    for kind in args.relays.split(","):
        result = measure(kind, args.relay_cpu, frames)
        results[kind] = result
        print(
            f"{kind:12} {result['user_us_per_event']:8.2f} {result['system_us_per_event']:8.2f} "
            f"{result['us_per_event']:9.2f} {result['frames_per_read']:12.2f} "
            f"{result['us_per_read']:8.2f} {result['streams_per_second_per_core']:39.0f}"
        )
    if args.output:
        with open(args.output, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
