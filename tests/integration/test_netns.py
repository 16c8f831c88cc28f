"""Two parties in separate network namespaces joined by a veth pair: real interface traffic.

Needs root and iproute2; skipped with the reason elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib

import pytest
import tomli_w

from smpc_synth.runtime.simulate import prepare_session

pytestmark = pytest.mark.netns


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def two_hosts():
    """Namespaces A and B with addresses 10.213.N.1 and 10.213.N.2 on a veth pair."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create network namespaces")
    tag = os.getpid() % 200 + 20
    a, b = f"smpc-a{tag}", f"smpc-b{tag}"
    va, vb = f"smpa{tag}", f"smpb{tag}"
    probe = _ip("netns", "add", a, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.strip()}")
    try:
        _ip("netns", "add", b)
        _ip("link", "add", va, "type", "veth", "peer", "name", vb)
        _ip("link", "set", va, "netns", a)
        _ip("link", "set", vb, "netns", b)
        for ns, dev, host in ((a, va, 1), (b, vb, 2)):
            _ip("-n", ns, "addr", "add", f"10.213.{tag}.{host}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield {
            "alice": (a, va, f"10.213.{tag}.1"),
            "bob": (b, vb, f"10.213.{tag}.2"),
        }
    finally:
        _ip("netns", "del", a, check=False)
        _ip("netns", "del", b, check=False)


def _tx_bytes(ns: str, dev: str) -> int:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "cat", f"/sys/class/net/{dev}/statistics/tx_bytes"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


def test_parties_on_two_hosts_train_over_tls_across_a_veth_link(two_hosts, tmp_path):
    session = prepare_session(2, dataset="breast_cancer", out=tmp_path / "run", mode="plaintext")
    address = {name: f"{ip}:50051" for name, (_ns, _dev, ip) in two_hosts.items()}
    for member in session.members:
        doc = tomllib.loads(member.config_path.read_text())
        doc["party"]["listen"] = address[member.name]
        for peer in doc["peers"]:
            peer["address"] = address[peer["name"]]
        member.config_path.write_text(tomli_w.dumps(doc))
    before = {n: _tx_bytes(ns, dev) for n, (ns, dev, _ip_) in two_hosts.items()}
    procs = {
        m.name: subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                two_hosts[m.name][0],
                sys.executable,
                "-m",
                "smpc_synth",
                "party",
                "--config",
                str(m.config_path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in session.members
    }
    results = {n: (p.communicate(timeout=300), p.returncode) for n, p in procs.items()}
    for name, ((_out, err), code) in results.items():
        assert code == 0, (name, err)
    bob_sent = _tx_bytes(*two_hosts["bob"][:2]) - before["bob"]
    rows_bytes = (session.run_dir / "parties" / "bob" / "data.csv").stat().st_size
    assert bob_sent > rows_bytes / 2  # bob's rows crossed the veth interface (Arrow + TLS)
    assert (session.run_dir / "parties" / "alice" / "generator.pt").is_file()
