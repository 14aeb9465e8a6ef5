"""A TCP relay on 127.0.0.1 in front of a real server (MariaDB, Redis), which a test can cut
and restore: the service connects through it, so a cut is an outage the service sees exactly
as a network partition or a server gone away, while the test still reaches the server
directly.

Two ways to cut:
- `refuse`: every open connection is closed at once and new ones are closed as soon as they
  are accepted (a server that went away: clients fail fast);
- `stall`: bytes stop flowing both ways and new connections get no answer (a partition: clients
  wait for their own timeouts). On restore the stalled connections are closed, as a partition
  that outlived the TCP timeouts leaves them.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Optional

OPEN, REFUSE, STALL = "open", "refuse", "stall"


class Relay:
    def __init__(self, upstream_port: int, name: str):
        self.name = name
        self.upstream = ("127.0.0.1", upstream_port)
        self.mode = OPEN
        self._lock = threading.Lock()
        # Each connection: (client socket, upstream socket or None, stalled during a cut).
        self._pairs: list[list] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self._stopped = False
        # When each cut and restore happened (monotonic), for the test's timeline.
        self.events: list[tuple[str, float]] = []
        threading.Thread(target=self._accept, name=f"relay-{name}", daemon=True).start()

    # -- control ---------------------------------------------------------------------------

    def cut(self, mode: str) -> float:
        assert mode in (REFUSE, STALL)
        with self._lock:
            self.mode = mode
            pairs = list(self._pairs)
            for pair in pairs:
                pair[2] = True
        if mode == REFUSE:
            for pair in pairs:
                self._close(pair)
        at = time.monotonic()
        self.events.append((f"cut-{mode}", at))
        return at

    def restore(self) -> float:
        with self._lock:
            self.mode = OPEN
            stalled = [p for p in self._pairs if p[2]]
        for pair in stalled:
            self._close(pair)
        at = time.monotonic()
        self.events.append(("restore", at))
        return at

    def stop(self) -> None:
        self._stopped = True
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            self._close(pair)

    # -- plumbing --------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                mode = self.mode
            if mode == REFUSE:
                self._abort(client)
                continue
            pair: list = [client, None, mode == STALL]
            with self._lock:
                self._pairs.append(pair)
            if mode == STALL:
                continue  # accepted, never answered: closed on restore
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                self._close(pair)
                continue
            pair[1] = upstream
            threading.Thread(target=self._pump, args=(pair, client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(pair, upstream, client), daemon=True).start()

    def _pump(self, pair: list, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._close(pair)
                return
            if pair[2]:
                continue  # stalled: what was sent during the cut never arrives
            try:
                sink.sendall(data)
            except OSError:
                self._close(pair)
                return

    @staticmethod
    def _abort(sock: Optional[socket.socket], reset: bool = True) -> None:
        if sock is None:
            return
        try:
            # RST rather than FIN: the client sees a reset connection, as with a dead server.
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass

    def _close(self, pair: list) -> None:
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)
        for sock in pair[:2]:
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self._abort(sock, reset=False)
