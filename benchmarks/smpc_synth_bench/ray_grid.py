"""Benchmark grids on a Ray cluster: ``smpc-synth bench paper --ray ADDRESS|local``.

Each grid cell becomes a Ray task that runs one simulated session; the task holds a
placement group with one CPU bundle per member (``STRICT_PACK``: all on one node), so a
cell's party, dealer and aggregator processes run side by side on a node that has room for
them, and no two cells share those CPUs. The driver writes each finished cell's record into
the same ``runs.jsonl`` as a local grid (so an interrupted grid resumes either way) and the
same tables and plots. A cell's run directory (logs, outputs) stays on the node that ran it;
its record names the node.

``local`` starts a Ray instance on this machine that runs one cell at a time (timings are
not disturbed by a neighbouring cell). Ray is an optional extra:
``pip install 'smpc-synth[ray]'``.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from smpc_synth.errors import InputError

log = logging.getLogger(__name__)

LOCAL = "local"
INSTALL_HINT = "pip install 'smpc-synth[ray]'"
CPUS_PER_MEMBER = 1.0


def require_ray() -> Any:
    """The ``ray`` module, or an InputError (exit code 2) with the install hint."""
    try:
        import ray
    except ImportError:
        raise InputError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def connect(address: str, largest_cell: int) -> Any:
    """Join the cluster at ``address``, or start a local instance with room for the
    largest cell (``largest_cell`` members)."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    here = Path(__file__).resolve()  # the repository's root and benchmarks/, for the workers
    roots = [str(here.parents[2]), str(here.parents[1])]
    path = os.environ.get("PYTHONPATH", "")
    env = {"PYTHONPATH": os.pathsep.join(roots + ([path] if path else []))}
    quiet = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    if address == LOCAL:
        cpus = max(os.cpu_count() or 1, int(largest_cell * CPUS_PER_MEMBER))
        ray.init(num_cpus=cpus, runtime_env={"env_vars": env}, **quiet)
    else:
        try:
            ray.init(address=address, **quiet)
        except ConnectionError as exc:
            raise InputError(f"--ray {address}: cannot reach the Ray cluster ({exc})") from None
        _check_room(ray, address, largest_cell)
    return ray


def _check_room(ray: Any, address: str, largest_cell: int) -> None:
    """Refuse a cluster none of whose nodes could hold the largest cell (its placement
    group would wait for ever)."""
    need = largest_cell * CPUS_PER_MEMBER
    largest = max(
        (node.get("Resources", {}).get("CPU", 0.0) for node in ray.nodes() if node.get("Alive")),
        default=0.0,
    )
    if largest < need:
        ray.shutdown()
        raise InputError(
            f"--ray {address}: the largest cell runs {largest_cell} member processes, placed "
            f"together on one node, but the cluster's largest node has {largest:g} CPUs"
        )


def run_on_ray(
    address: str,
    todo: list[dict[str, Any]],
    spec: Any,
    out: Path,
    profiles: dict[str, Any],
    members_of,
) -> Iterator[dict[str, Any]]:
    """Run each of ``todo`` as a Ray task in its own placement group; yield each record as
    its cell ends (in finishing order). ``members_of(run)`` counts a cell's members."""
    if not todo:
        return
    ray = connect(address, max(members_of(run) for run in todo))
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    task = ray.remote(num_cpus=CPUS_PER_MEMBER)(_cell)
    profile_dicts = {name: p.as_dict() for name, p in profiles.items()}
    in_flight: dict[Any, tuple[dict[str, Any], Any]] = {}
    queue = list(todo)
    parallel = 1 if address == LOCAL else len(todo)
    try:
        while queue or in_flight:
            while queue and len(in_flight) < parallel:
                run = queue.pop(0)
                bundles = [{"CPU": CPUS_PER_MEMBER}] * members_of(run)
                group = placement_group(bundles, strategy="STRICT_PACK")
                strategy = PlacementGroupSchedulingStrategy(
                    placement_group=group, placement_group_bundle_index=0
                )
                ref = task.options(scheduling_strategy=strategy).remote(
                    run, spec, str(out.resolve()), profile_dicts
                )
                in_flight[ref] = (run, group)
            done, _ = ray.wait(list(in_flight), num_returns=1)
            run, group = in_flight.pop(done[0])
            try:
                record = ray.get(done[0])
            except Exception as exc:  # the task itself failed: a failed record, not a crash
                record = _failed_record(run, spec, out, exc)
            finally:
                remove_placement_group(group)
            yield record
    finally:
        for _, group in in_flight.values():
            remove_placement_group(group)
        if address == LOCAL:
            ray.shutdown()


def _cell(run: dict[str, Any], spec: Any, out: str, profile_dicts: dict[str, dict]) -> dict:
    """One cell on a Ray worker: the same session a local grid runs, recorded on its node."""
    from smpc_synth.runtime.network import NetworkProfile
    from smpc_synth.runtime.simulate import simulate
    from smpc_synth_bench.environment import describe_environment
    from smpc_synth_bench.grid import one_run

    profiles = {name: NetworkProfile(**d) for name, d in profile_dicts.items()}
    environment = {**describe_environment(), "node": platform.node()}
    return one_run(run, spec, Path(out), simulate, environment, profiles)


def _failed_record(run: dict[str, Any], spec: Any, out: Path, exc: Exception) -> dict[str, Any]:
    from smpc_synth_bench.environment import describe_environment
    from smpc_synth_bench.grid import make_record, run_dir_name, run_options

    cause = getattr(exc, "cause", None) or exc
    code = getattr(cause, "exit_code", 1)
    log.error("%s failed on Ray: %s", run, cause)
    record = make_record(
        run,
        run_options(run, spec),
        code,
        {},
        describe_environment(),
        out / "runs" / run_dir_name(run),
    )
    record["error"] = f"{type(cause).__name__}: {cause}"
    return record
