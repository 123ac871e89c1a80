"""A lean byte stream over a plain TCP socket, for the per-event hot path.

Theory of operation: :class:`trio.SocketStream` wraps every send and receive
in a cancellation check before the system call and a full scheduler round
trip after it, and guards each direction with a conflict detector. A streamed
answer is one upstream read and one client write per event, so that
machinery costs more than the system calls it surrounds (a scheduler round
trip is about 5 us; the system call about 2).

:class:`LeanSocketStream` tries the system call first and waits for the
socket (``wait_readable`` / ``wait_writable``) only when it would block. Trio's
rules still hold:

* a task blocked in I/O is blocked in Trio's wait, so cancellation and
  closing the socket from another task reach it at once;
* a loop whose I/O never blocks still yields to the scheduler (and so
  notices cancellation) at least every :data:`MAX_STEPS_WITHOUT_YIELD` calls;
* a pending cancellation is seen before every call, without a yield.

It is a :class:`trio.abc.HalfCloseableStream`, so it also serves as the
transport under a :class:`trio.SSLStream`. Callers must not send from two
tasks at once (nor receive from two at once): unlike ``SocketStream`` it does
not detect that; every user here already serializes its writes.
"""

from __future__ import annotations

import errno
import os

import trio

# Calls that completed without waiting before one yields to the scheduler
# anyway: bounds how long a sender to a fast reader (or a reader of a fast
# sender) can hold the event loop, at a cost of one round trip per this many.
MAX_STEPS_WITHOUT_YIELD = 16

# receive_some's size when the caller names none (as trio's SocketStream).
DEFAULT_RECEIVE_SIZE = 64 * 1024


class LeanSocketStream(trio.abc.HalfCloseableStream):
    """A :class:`trio.SocketStream` with the cheap path first.

    Args:
        stream: a connected TCP stream; it is taken over (closing this
            closes it) and must not be used directly afterwards for I/O.
    """

    __slots__ = ("_steps", "socket", "stream")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.socket = stream.socket
        self._steps = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Bytes that have arrived (at most ``max_bytes``); ``b""`` at EOF.

        Raises:
            trio.ClosedResourceError: the socket was closed (here or meanwhile).
            trio.BrokenResourceError: the connection broke.
        """
        if max_bytes is None:
            max_bytes = DEFAULT_RECEIVE_SIZE
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        await self._pace()
        while True:
            try:
                return os.read(self._fileno(), max_bytes)
            except BlockingIOError:
                pass
            except OSError as exc:
                raise _stream_error(exc) from exc
            await self._wait(trio.lowlevel.wait_readable)

    def receive_nowait(self, max_bytes: int = DEFAULT_RECEIVE_SIZE) -> bytes | None:
        """Bytes that have already arrived, without waiting: None if none.

        ``b""`` at EOF. Not a checkpoint: for a caller that must not yield
        (a connection's owner tidying up after its last read).

        Raises:
            trio.ClosedResourceError: the socket was closed.
            trio.BrokenResourceError: the connection broke.
        """
        try:
            return os.read(self._fileno(), max_bytes)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise _stream_error(exc) from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send every byte of ``data``, waiting while the socket is full.

        Raises:
            trio.ClosedResourceError: the socket was closed, or EOF was sent.
            trio.BrokenResourceError: the connection broke.
        """
        if self.socket.did_shutdown_SHUT_WR:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        await self._pace()
        with memoryview(data) as view:
            total = len(view)
            sent = 0
            while True:
                try:
                    sent += os.write(self._fileno(), view[sent:] if sent else view)
                except BlockingIOError:
                    pass
                except OSError as exc:
                    raise _stream_error(exc) from exc
                if sent >= total:
                    return
                await self._wait(trio.lowlevel.wait_writable)

    async def wait_send_all_might_not_block(self) -> None:
        self._fileno()
        await self._wait(trio.lowlevel.wait_writable)

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()

    def _fileno(self) -> int:
        # Checked before every system call: a closed socket's number may
        # already belong to another connection.
        fileno = self.socket.fileno()
        if fileno == -1:
            raise trio.ClosedResourceError("the socket was closed")
        return fileno

    async def _pace(self) -> None:
        if self._steps < MAX_STEPS_WITHOUT_YIELD:
            self._steps += 1
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            self._steps = 0
            await trio.lowlevel.checkpoint()

    async def _wait(self, wait_for: object) -> None:
        self._steps = 0
        try:
            await wait_for(self.socket)  # type: ignore[operator]
        except OSError as exc:
            raise _stream_error(exc) from exc


def _stream_error(exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
    """A socket error as trio's stream errors say it (as SocketStream does)."""
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("the socket was closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


def lean_stream(stream: trio.abc.Stream) -> trio.abc.Stream:
    """``stream`` with the lean path when it is a plain TCP stream, else itself."""
    if type(stream) is trio.SocketStream:
        return LeanSocketStream(stream)
    return stream
