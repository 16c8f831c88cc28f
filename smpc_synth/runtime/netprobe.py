"""Measure a link: ``python -m smpc_synth.runtime.netprobe serve|ping ...``.

Round-trip time (one-byte TCP ping-pongs, Nagle off) and throughput (a bulk TCP transfer;
the rate of its last three quarters, past slow start, timed by the receiver). Used by
:mod:`smpc_synth.runtime.network` to calibrate its delay line and by ``smpc-synth bench
network`` to show how close an emulated link comes to its profile. Run inside network
namespaces (``ip netns exec``), one process at each end.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import struct
import sys
import time

CHUNK = 1 << 20
WARMUP_PINGS = 3


def serve(host: str, port: int) -> None:
    """Answer probes one connection at a time until killed."""
    with socket.create_server((host, port), reuse_port=False) as server:
        print("listening", flush=True)
        while True:
            conn, _ = server.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                _answer(conn)


def _answer(conn: socket.socket) -> None:
    while True:
        kind = conn.recv(1)
        if not kind:
            return
        if kind == b"p":
            conn.sendall(b"p")
        elif kind == b"b":
            size = struct.unpack("!Q", _exact(conn, 8))[0]
            got, quarter, started = 0, size // 4, None
            while got < size:
                data = conn.recv(min(CHUNK, size - got))
                if not data:
                    return
                got += len(data)
                if started is None and got >= quarter:
                    started, counted = time.perf_counter(), got
            seconds = time.perf_counter() - started
            conn.sendall(struct.pack("!dQ", seconds, size - counted))


def _exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = conn.recv(n - len(data))
        if not more:
            raise ConnectionError("probe peer closed the connection")
        data += more
    return data


def ping(host: str, port: int, pings: int, nbytes: int, timeout: float = 60.0) -> dict:
    """RTT statistics over ``pings`` ping-pongs and, if ``nbytes``, the bulk rate."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = socket.create_connection((host, port), timeout=timeout)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rtts = []
        for i in range(pings + WARMUP_PINGS):
            started = time.perf_counter()
            conn.sendall(b"p")
            _exact(conn, 1)
            if i >= WARMUP_PINGS:
                rtts.append((time.perf_counter() - started) * 1e3)
        rtts.sort()
        result = {
            "pings": len(rtts),
            "rtt_ms_min": rtts[0],
            "rtt_ms_median": statistics.median(rtts),
            "rtt_ms_p90": rtts[min(len(rtts) - 1, int(0.9 * len(rtts)))],
            "rtt_ms_max": rtts[-1],
        }
        if nbytes:
            conn.sendall(b"b" + struct.pack("!Q", nbytes))
            block = b"\0" * CHUNK
            started = time.perf_counter()
            sent = 0
            while sent < nbytes:
                step = min(CHUNK, nbytes - sent)
                conn.sendall(block[:step])
                sent += step
            seconds, counted = struct.unpack("!dQ", _exact(conn, 16))
            total = time.perf_counter() - started
            result.update(
                {
                    "bytes": nbytes,
                    "throughput_mbit": counted * 8 / seconds / 1e6,
                    "throughput_mbit_whole": nbytes * 8 / total / 1e6,
                }
            )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p = sub.add_parser("ping")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pings", type=int, default=50)
    p.add_argument("--bytes", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.host, args.port)
    else:
        print(json.dumps(ping(args.host, args.port, args.pings, args.bytes)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
