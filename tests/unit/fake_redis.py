# -*- coding: utf-8 -*-
# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A minimal Redis server for tests (the demo service and the health checks talk to it)."""

from __future__ import annotations

import socket
import threading


class FakeRedis:
    """Just enough RESP: AUTH, PING and INFO replication, with requirepass."""

    def __init__(self, password: str):
        self.password = password
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.pings = 0
        self.role = "master"
        self.stopped = threading.Event()
        self.clients = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped.is_set():
            try:
                conn = self.sock.accept()[0]
            except OSError:
                return
            if self.stopped.is_set():
                conn.close()
                return
            self.clients.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        authed = False
        reader = conn.makefile("rb")
        try:
            while True:
                line = reader.readline()
                if not line:
                    return
                assert line.startswith(b"*")
                args = []
                for _line in range(int(line[1:])):
                    length = int(reader.readline()[1:])
                    args.append(reader.read(length + 2)[:-2])
                cmd = args[0].upper()
                if cmd == b"AUTH":
                    authed = args[-1].decode() == self.password
                    conn.sendall(b"+OK\r\n" if authed else b"-WRONGPASS invalid password\r\n")
                elif not authed:
                    conn.sendall(b"-NOAUTH Authentication required.\r\n")
                elif cmd == b"PING":
                    self.pings += 1
                    conn.sendall(b"+PONG\r\n")
                elif cmd == b"INFO":
                    body = ("# Replication\r\nrole:%s\r\nconnected_slaves:0\r\n" % self.role).encode()
                    conn.sendall(b"$%d\r\n%s\r\n" % (len(body), body))
                else:
                    conn.sendall(b"-ERR unknown command\r\n")
        except (OSError, ValueError, AssertionError):
            return
        finally:
            conn.close()

    def close(self):
        self.stopped.set()
        # shutdown() wakes the thread blocked in accept(); close() alone does not on
        # Linux, and that thread would still accept the service's reconnection.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for conn in self.clients:
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass
