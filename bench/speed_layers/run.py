"""Does each speed layer pay for itself? One command, the host's own CPU, no root.

    .venv/bin/python bench/speed_layers/run.py [--sizes 1000,10000] [--rounds 5]

Each layer is switched off by replacing it with the general path it shortcuts,
before the agent's modules are imported, in a fresh interpreter per
measurement: on and off runs alternate, and each cell is the minimum over all
of its runs. Times are CPU time (user + system) of the process doing the work:
the CPU is shared, and the minimum CPU time is the least disturbed run.
"Cold" operations time a whole fresh interpreter, imports included, as a
one-shot command pays them. A layer is kept when it cuts its operation by at
least 20 % at 10,000 services (the size the layers were written for; the
1,000-service cuts are printed too).

Layers and what "off" means:
- composer: PyYAML's own composer (CSafeLoader) builds the tree, converted to
  the reader's nodes.
- quick: the common virtual-server shape goes through the general reader too.
- gcpause: the cyclic garbage collector stays enabled.
- configcache: the file is read and the desired table built (LVS_AGENT_CACHE_DIR="").

Two more layers were measured this way and removed, since they cut less than
20 % (bench/RESULTS.md, "Speed layers"): a line reader for a plain subset of
YAML, and generated dataclass constructors.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

KEEP_CUT = 20.0  # percent

# layer -> the operations it serves
OPERATIONS: dict[str, list[str]] = {
    "composer": ["compose YAML", "read config", "check-config cold"],
    "quick": ["read config", "check-config cold"],
    "gcpause": ["desired table", "plan (empty kernel)", "decode dump", "cache hit"],
    "configcache": ["config to table", "plan command cold"],
}


# ---- the layers switched off (run in the worker before the agent is imported) ----------


def _general_compose(text: str, problems: Any, stream: Any = None) -> Any:
    """PyYAML's composer into the reader's nodes: what reading costs without
    agent.config.composer."""
    import yaml

    from agent.config.composer import _merge_keys
    from agent.config.reader import STR_TAG, MappingNode, Problem, ScalarNode, SequenceNode

    def convert(node: Any, memo: dict[int, Any]) -> Any:
        done = memo.get(id(node))
        if done is not None:
            return done
        line = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            plain = not node.style
            out: Any = ScalarNode(line, node.value, None if plain else STR_TAG)
        elif isinstance(node, yaml.SequenceNode):
            out = SequenceNode(line)
            out.value = [convert(n, memo) for n in node.value]
        else:
            out = MappingNode(line)
            out.value = [(convert(k, memo), convert(v, memo)) for k, v in node.value]
            if any(isinstance(k, ScalarNode) and k.value == "<<" for k, _ in out.value):
                _merge_keys(out)
        memo[id(node)] = out
        return out

    try:
        root = yaml.compose(text, Loader=yaml.CSafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problems.found.append(
            Problem(problems.file, mark.line + 1 if mark else 1, "", f"YAML syntax error: {exc}")
        )
        return None
    if root is None:
        return None
    tree = convert(root, {})
    for key, value in tree.value if isinstance(tree, MappingNode) else []:
        each = (stream or {}).get(key.value) if isinstance(key, ScalarNode) else None
        if each is not None and isinstance(value, SequenceNode):
            for index, entry in enumerate(value.value):
                each(entry, index)
            value.value = []
    return tree


def switch_off(layer: str) -> None:
    if layer == "composer":
        from agent.config import composer

        composer.compose = _general_compose
    elif layer == "quick":
        from agent.config import quick

        quick.virtual_server = lambda node, health=None: None
    elif layer == "gcpause":
        import contextlib

        from agent import gcpause

        gcpause.paused_gc = lambda pause=True: contextlib.nullcontext()
    elif layer != "configcache":
        raise SystemExit(f"unknown layer {layer}")


# ---- the operations, timed inside one worker interpreter -----------------------------------


def _timed(fn: Callable[[], Any], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def _kernel_nests(table: Any) -> list[tuple[bytes, list[bytes]]]:
    from agent.ipvs.netlink import Encoder

    enc = Encoder(0)
    return [
        (enc.service_full(ds.service), [enc.dest_full(d) for d in ds.dests.values()])
        for ds in table.values()
    ]


def worker(layer: str, mode: str, size: int, reps: int, op: str, work: str) -> float:
    if mode == "off":
        switch_off(layer)
    from bench.speed_layers.workload import agent_config

    text = agent_config(size, state_dir=f"{work}/state")
    if op == "read config":
        from agent.config.loader import parse_config

        return _timed(lambda: parse_config(text, "bench.yaml"), reps)
    if op == "compose YAML":
        from agent.config.reader import Problems, compose

        entries: list[Any] = []
        return _timed(
            lambda: (
                entries.clear(),
                compose(
                    text,
                    Problems("bench.yaml"),
                    {"virtual_servers": lambda n, i: entries.append(n)},
                ),
            ),
            reps,
        )
    from agent.config.loader import parse_config
    from agent.ipvs.desired import desired_table

    config = parse_config(text, "bench.yaml")
    if op == "desired table":
        return _timed(lambda: desired_table(config.virtual_servers), reps)
    table = desired_table(config.virtual_servers)
    if op == "plan (empty kernel)":
        from agent.ipvs.plan import Ownership, plan

        return _timed(lambda: plan(table, {}, Ownership(), 0.0, 300.0), reps)
    if op == "decode dump":
        from agent.gcpause import paused_gc
        from agent.ipvs.netlink import decode_dest, decode_service

        nests = _kernel_nests(table)

        def decode() -> dict[Any, Any]:
            out = {}
            with paused_gc():  # as IpvsKernel runs a dump
                for svc, dests in nests:
                    ks = decode_service(svc, 4, len(svc))
                    af = ks.service.key.af
                    for d in dests:
                        kd = decode_dest(d, 4, len(d), af)
                        ks.dests[kd.dest.key] = kd
                    out[ks.service.key] = ks
            return out

        return _timed(decode, reps)
    if op == "cache hit":
        from agent.ipvs.configcache import CompiledConfig, ConfigCache

        data = text.encode()
        ConfigCache(f"{work}/cache").store(
            data, CompiledConfig(config.state_dir, config.ipvs, table)
        )
        return _timed(lambda: ConfigCache(f"{work}/cache").load(data), reps)
    if op == "config to table":
        from agent.config.loader import decode_config
        from agent.ipvs.configcache import CompiledConfig, ConfigCache

        data = text.encode()
        if mode == "on":
            ConfigCache(f"{work}/cache").store(
                data, CompiledConfig(config.state_dir, config.ipvs, table)
            )
            assert ConfigCache(f"{work}/cache").load(data) is not None
            return _timed(lambda: ConfigCache(f"{work}/cache").load(data), reps)

        def full() -> Any:
            c = parse_config(decode_config(data, "bench.yaml"), "bench.yaml")
            return CompiledConfig(c.state_dir, c.ipvs, desired_table(c.virtual_servers))

        return _timed(full, reps)
    raise SystemExit(f"unknown operation {op}")


# ---- cold operations: a whole fresh interpreter ------------------------------------------

_PRELUDE = (
    f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
    "from bench.speed_layers.run import switch_off; "
)


def cold_command(
    layer: str, mode: str, op: str, path: str, work: str
) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    switch = f"switch_off({layer!r}); " if mode == "off" else ""
    if op == "check-config cold":
        code = f"from agent.config.loader import load_config; load_config({path!r})"
    elif op == "plan command cold":
        env["LVS_AGENT_CACHE_DIR"] = f"{work}/cache" if mode == "on" else ""
        code = f"from agent.cli import _compile; assert _compile({path!r}) is not None"
        switch = ""
    else:
        raise SystemExit(f"unknown operation {op}")
    return [sys.executable, "-c", _PRELUDE + switch + code], env


def run_cold(layer: str, mode: str, op: str, path: str, work: str) -> float:
    argv, env = cold_command(layer, mode, op, path, work)
    child = subprocess.Popen(argv, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{argv}: exit {child.returncode}")
    return usage.ru_utime + usage.ru_stime


def run_warm(layer: str, mode: str, size: int, reps: int, op: str, work: str) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", layer, mode, str(size), str(reps), op, work],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(json.loads(out.stdout)["best"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--rounds", type=int, default=5, help="on/off pairs per cell")
    ap.add_argument("--reps", type=int, default=2, help="timed runs inside one worker")
    ap.add_argument("--layers", default=",".join(OPERATIONS))
    ap.add_argument("--ops", help="only these operations (comma-separated)")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        layer, mode, size, reps, op, work = args.worker
        print(json.dumps({"best": worker(layer, mode, int(size), int(reps), op, work)}))
        return 0

    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    header = f"{'layer':<12} {'operation':<28} {'size':>6} {'with':>9} {'without':>9} {'cut':>6}"
    print(header)
    print("-" * len(header))
    verdicts: dict[str, bool] = {}
    with tempfile.TemporaryDirectory(prefix="speed-layers-") as work:
        for layer in args.layers.split(","):
            for op in OPERATIONS[layer]:
                if args.ops and op not in args.ops.split(","):
                    continue
                for size in sizes:
                    path = f"{work}/config-{size}.yaml"
                    if not os.path.exists(path):
                        from bench.speed_layers.workload import agent_config

                        Path(path).write_text(agent_config(size, state_dir=f"{work}/state"))
                    if op == "plan command cold":  # warm the cache: one run stores the entry
                        run_cold(layer, "on", op, path, work)
                    best = {"on": float("inf"), "off": float("inf")}
                    for r in range(args.rounds):
                        for mode in ("on", "off") if r % 2 == 0 else ("off", "on"):
                            if "cold" in op:
                                t = run_cold(layer, mode, op, path, work)
                            else:
                                t = run_warm(layer, mode, size, args.reps, op, work)
                            best[mode] = min(best[mode], t)
                    cut = 100.0 * (1.0 - best["on"] / best["off"])
                    keep = cut >= KEEP_CUT
                    if size == max(sizes):
                        verdicts[layer] = verdicts.get(layer, False) or keep
                    rows.append(
                        {"layer": layer, "operation": op, "size": size, "with": best["on"],
                         "without": best["off"], "cut_percent": round(cut, 1)}
                    )  # fmt: skip
                    verdict = "pays" if keep else "does not pay"
                    print(
                        f"{layer:<12} {op:<28} {size:>6} {best['on'] * 1000:>7.1f}ms "
                        f"{best['off'] * 1000:>7.1f}ms {cut:>5.1f}%  {verdict}",
                        flush=True,
                    )
    print()
    for layer, keep in verdicts.items():
        at = f"at {max(sizes)} services"
        print(f"{layer}: {'KEEP' if keep else 'REMOVE'} ({'a' if keep else 'no'} cut >= 20 % {at})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
