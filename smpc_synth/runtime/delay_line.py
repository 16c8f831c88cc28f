"""The delay line of an emulated network: ``python -m smpc_synth.runtime.delay_line``.

Runs inside the router namespace of :mod:`smpc_synth.runtime.network`. It creates a TUN
device; the router's policy routing sends every packet between members into it. Each packet
is held for the one-way delay (plus jitter) and written back, from where the router delivers
it. Jitter never reorders a direction: a packet leaves no earlier than the one before it
between the same two addresses, so TCP sees delay variation, not reordering.

Control, one line each on stdin, answered on stdout: ``set ONE_WAY_US JITTER_US SEED``
(answers ``ok``) and ``stats`` (answers a JSON object: packets, drops and how late packets
left against their due time). End of stdin (the launcher ended or died) ends the process,
which removes the TUN device.
"""

from __future__ import annotations

import argparse
import fcntl
import heapq
import json
import os
import random
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
READ_SIZE = 65_536
# Packets held at once, in bytes: a second of a 1 Gbit/s link at 1 s one-way delay is
# 125 MB; beyond this the line drops, as a router's full buffer would.
MAX_HELD_BYTES = 256 * 1024 * 1024
LATE_SAMPLES = 4096  # lateness samples kept for the stats percentiles


class DelayLine:
    """The packet schedule: due times per packet, FIFO per direction, bounded memory."""

    def __init__(self) -> None:
        self.one_way = 0.0
        self.jitter = 0.0
        self.rng = random.Random(0)
        self.sampler = random.Random(1)  # lateness reservoir; apart from the jitter's draws
        self.heap: list[tuple[float, int, bytes]] = []
        self.last_due: dict[bytes, float] = {}
        self.held = 0
        self.seq = 0
        self.packets = 0
        self.drops = 0
        self.write_errors = 0
        self.late: list[float] = []

    def configure(self, one_way_s: float, jitter_s: float, seed: int) -> None:
        self.one_way, self.jitter = one_way_s, jitter_s
        self.rng = random.Random(seed)

    def hold(self, packet: bytes, now: float) -> None:
        if self.held + len(packet) > MAX_HELD_BYTES:
            self.drops += 1
            return
        delay = self.one_way
        if self.jitter:
            delay = max(0.0, delay + self.rng.uniform(-self.jitter, self.jitter))
        due = now + delay
        flow = _flow(packet)
        previous = self.last_due.get(flow)
        if previous is not None and previous > due:
            due = previous
        self.last_due[flow] = due
        self.seq += 1
        self.packets += 1
        self.held += len(packet)
        heapq.heappush(self.heap, (due, self.seq, packet))

    def due(self, now: float) -> list[bytes]:
        out = []
        while self.heap and self.heap[0][0] <= now:
            due, _, packet = heapq.heappop(self.heap)
            self.held -= len(packet)
            if len(self.late) < LATE_SAMPLES:
                self.late.append(now - due)
            else:
                self.late[self.sampler.randrange(LATE_SAMPLES)] = now - due
            out.append(packet)
        return out

    def wait(self, now: float) -> float | None:
        return max(0.0, self.heap[0][0] - now) if self.heap else None

    def stats(self) -> dict[str, float | int]:
        late = sorted(self.late)

        def pct(q: float) -> float:
            return late[min(len(late) - 1, int(q * len(late)))] * 1e3 if late else 0.0

        return {
            "packets": self.packets,
            "drops": self.drops,
            "write_errors": self.write_errors,
            "late_ms_median": pct(0.5),
            "late_ms_p99": pct(0.99),
            "late_ms_max": late[-1] * 1e3 if late else 0.0,
        }


def _flow(packet: bytes) -> bytes:
    """Source and destination address: the direction a packet travels."""
    if packet and packet[0] >> 4 == 6:
        return packet[8:40]
    return packet[12:20]


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    os.set_blocking(fd, False)
    return fd


def _raise_priority() -> str:
    """Timely departures matter more than anything else this process does; its loop blocks
    in select, so a real-time class cannot starve the machine."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        return "SCHED_FIFO"
    except (OSError, AttributeError):
        try:
            os.nice(-10)
            return "nice -10"
        except OSError:
            return "default"


def serve(device: str) -> None:
    fd = open_tun(device)
    line = DelayLine()
    priority = _raise_priority()
    print(json.dumps({"ready": device, "priority": priority}), flush=True)
    control = sys.stdin.fileno()
    pending = b""
    while True:
        readable, _, _ = select.select([fd, control], [], [], line.wait(time.monotonic()))
        now = time.monotonic()
        if fd in readable:
            while True:
                try:
                    packet = os.read(fd, READ_SIZE)
                except BlockingIOError:
                    break
                line.hold(packet, now)
        for packet in line.due(time.monotonic()):
            try:
                os.write(fd, packet)
            except OSError:
                line.write_errors += 1
        if control in readable:
            chunk = os.read(control, 4096)
            if not chunk:
                return  # the launcher is gone
            pending += chunk
            while b"\n" in pending:
                command, pending = pending.split(b"\n", 1)
                print(_answer(line, command.decode().split()), flush=True)


def _answer(line: DelayLine, words: list[str]) -> str:
    if words[:1] == ["set"] and len(words) == 4:
        line.configure(int(words[1]) / 1e6, int(words[2]) / 1e6, int(words[3]))
        return "ok"
    if words == ["stats"]:
        return json.dumps(line.stats())
    return json.dumps({"error": f"unknown command {' '.join(words)!r}"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="tun0", help="name of the TUN device to create")
    args = parser.parse_args(argv)
    serve(args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
