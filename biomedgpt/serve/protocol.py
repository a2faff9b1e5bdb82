"""uvicorn's HTTP/1.1 protocol with the read deadlines it lacks, and a cap on open connections.

uvicorn closes an idle keep-alive connection, but a connection that never sends a byte, one that sends its
headers a byte a second, and one that stops halfway through its body all stay open forever. This protocol
gives each connection a deadline for the phase its client is in:

- headers: `header_timeout_s` from the moment the server waits for a request (connection opened, or the
  previous response sent) until the request line and headers are complete; a partial request then gets a
  408 and the connection is closed, a silent one is just closed;
- body: the app answers 408 itself when the body is not complete within `body_timeout_s`
  (`middleware.BodyLimitMiddleware`); this protocol closes the connection `BODY_GRACE_S` later if the client is
  still sending, which also ends bodies nobody reads (after a 401 or a 413, say).

A connection opened while `max_connections` are already open is marked in the ASGI scope's `state`
(`OVER_CAPACITY`); the app answers its request with a JSON 503 and closes it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from biomedgpt.serve.http_errors import error_body

log = logging.getLogger(__name__)

OVER_CAPACITY = "biomedgpt.over_capacity"
"""Key in the ASGI scope's `state`: True on a connection opened beyond `max_connections`."""
BODY_GRACE_S = 2.0
"""How long after the body deadline the connection is closed if the app has not closed it with its 408."""


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps(
        error_body(408, f"the request headers did not arrive within {seconds:g} s", code="request_timeout")
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedH11Protocol(H11Protocol):
    """`H11Protocol` with per-phase read deadlines and the connection cap (set by `guarded_protocol`)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 64

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._phase: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections:
            self.app_state = {**self.app_state, OVER_CAPACITY: True}
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _client_phase(self) -> str | None:
        state = self.conn.their_state
        if state is h11.IDLE:
            return "headers"
        if state is h11.SEND_BODY:
            return "body"
        return None  # request complete (the app is working on it) or the connection is closing

    def _arm(self) -> None:
        """Start the deadline of the client's current phase; a phase keeps its deadline however many bytes come."""
        phase = self._client_phase()
        if phase == self._phase and (phase is None or self._deadline is not None):
            return
        self._cancel()
        self._phase = phase
        if phase is not None and not self.transport.is_closing():
            timeout = self.header_timeout_s if phase == "headers" else self.body_timeout_s + BODY_GRACE_S
            self._deadline = self.loop.call_later(timeout, self._expired, phase)

    def _cancel(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()  # type: ignore[union-attr]
            self._deadline = None

    def _expired(self, phase: str) -> None:
        self._deadline = None
        if self.transport.is_closing() or self._client_phase() != phase:
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        if phase == "headers":
            partial = bool(self.conn.trailing_data[0])
            if partial and self.conn.our_state is h11.IDLE:
                self.transport.write(_timeout_response(self.header_timeout_s))
            if partial:
                log.info(
                    "closed %s: its request headers did not arrive within %g s", client, self.header_timeout_s
                )
        else:
            log.info("closed %s: its request body did not arrive within %g s", client, self.body_timeout_s)
        self.transport.close()


def guarded_protocol(*, header_timeout_s: float, body_timeout_s: float, max_connections: int) -> Any:
    """A `GuardedH11Protocol` class with these limits, for `uvicorn.Config(http=...)`."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {
            "header_timeout_s": header_timeout_s,
            "body_timeout_s": body_timeout_s,
            "max_connections": max_connections,
        },
    )
