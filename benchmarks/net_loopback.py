"""Loopback figures for the data plane: small-message round trip and large-tensor throughput.

``python benchmarks/net_loopback.py`` starts an echo member in a second process (its own
GIL, as in a real session) and prints, with and without TLS, the median round-trip time of
a small tensor (what a CrypTen round costs) and the throughput of a large tensor sent one
way and acknowledged (what a CKKS ciphertext or a Beaver-triple batch costs).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path

import torch

from smpc_synth.config import NetworkConfig
from smpc_synth.net.addresses import free_ports
from smpc_synth.net.certs import write_certificates
from smpc_synth.net.mesh import PeerMesh
from smpc_synth.net.tls import TlsFiles

NETWORK = NetworkConfig(connect_timeout_s=60.0, peer_timeout_s=120.0)
NAMES = ("client", "echo")


def _mesh(me: str, addresses: dict[str, str], tls: TlsFiles | None) -> PeerMesh:
    peers = {name: address for name, address in addresses.items() if name != me}
    mesh = PeerMesh(me, addresses[me], peers, tls, NETWORK)
    mesh.start()
    mesh.connect()
    return mesh


def _echo(addresses: dict[str, str], tls: TlsFiles | None, rounds: int) -> None:
    """Send back every small message; acknowledge the large one."""
    torch.set_num_threads(1)
    mesh = _mesh("echo", addresses, tls)
    for _ in range(rounds):
        mesh.send("client", "pong", mesh.recv("client", "ping"))
    mesh.recv("client", "bulk")
    mesh.send("client", "ack", b"")
    mesh.close()


def measure(tls: TlsFiles | None, echo_tls: TlsFiles | None, rounds: int, mb: int) -> dict:
    """Median round trip (ms) of a 10-float tensor and MB/s of an ``mb`` MiB tensor."""
    addresses = {name: f"127.0.0.1:{port}" for name, port in zip(NAMES, free_ports(2))}
    echo = mp.get_context("spawn").Process(target=_echo, args=(addresses, echo_tls, rounds))
    echo.start()
    mesh = _mesh("client", addresses, tls)
    small, times = torch.randn(10), []
    for _ in range(rounds):
        start = time.perf_counter()
        mesh.send("echo", "ping", small)
        mesh.recv("echo", "pong")
        times.append(time.perf_counter() - start)
    bulk = torch.randn(mb * 1024 * 1024 // 4)
    start = time.perf_counter()
    mesh.send("echo", "bulk", bulk)
    mesh.recv("echo", "ack", timeout=300)
    seconds = time.perf_counter() - start
    mesh.close()
    echo.join()
    return {"rtt_ms": 1000 * statistics.median(times), "mb_per_s": mb * 1.048576 / seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000, help="small round trips")
    parser.add_argument("--mb", type=int, default=64, help="size of the large tensor, MiB")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_certificates(list(NAMES), Path(tmp))
        for label, client, echo in [
            ("mutual TLS", files["client"], files["echo"]),
            ("plain TCP", None, None),
        ]:
            result = measure(client, echo, args.rounds, args.mb)
            print(
                f"{label:>10}: round trip of a 10-float tensor {result['rtt_ms']:.3f} ms "
                f"(median of {args.rounds}); {args.mb} MiB tensor {result['mb_per_s']:.0f} MB/s"
            )


if __name__ == "__main__":
    main()
