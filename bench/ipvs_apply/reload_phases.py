"""Where a reload's time goes, without a kernel: the configuration worker's answer
(read, check, table, delta) for one weight changed in 10,000 services, from one file
and from 100 included files, and the daemon's side of it (unpickle and rebuild).

    .venv/bin/python bench/ipvs_apply/reload_phases.py [--services 10000] [--files 100] [--rounds 3]

Prints the best of three of each phase (the first read with no file cached),
with the collector off as in the worker process; run it beside (f) to see what part of
SIGHUP -> kernel is the configuration and what is the rest (signal, reconcile).
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.ipvs_apply.run import agent_config, agent_part, split_bounds  # noqa: E402

ROUNDS = [3]


def best(fn: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(ROUNDS[0]):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many")
    args = parser.parse_args()
    n, files = args.services, args.files
    ROUNDS[0] = args.rounds
    import gc

    from agent.config import load_config
    from agent.config.include import PARTS
    from agent.daemon import worker
    from agent.ipvs.desired import desired_table

    gc.disable()  # as in the worker process (agent.daemon.worker.main)
    with tempfile.TemporaryDirectory(prefix="reload-phases-") as tmp:
        work = Path(tmp)
        one = work / "one.yaml"
        conf_d = work / "conf.d"
        conf_d.mkdir()
        bounds = split_bounds(n, files)
        for k, (lo, hi) in enumerate(bounds):
            (conf_d / f"{k:04d}.yaml").write_text(agent_part(lo, hi, n))
        split = work / "split.yaml"
        split.write_text(f"state_dir: {work}/s\ninclude: [{conf_d}/*.yaml]\n")
        one.write_text(agent_config(n, f"{work}/s"))
        last = conf_d / f"{files - 1:04d}.yaml"
        weight = [1]

        def change_one() -> None:
            weight[0] += 1
            one.write_text(agent_config(n, f"{work}/s", weight[0]))

        def change_split() -> None:
            weight[0] += 1
            last.write_text(agent_part(bounds[-1][0], n, n, weight[0]))

        print(f"{n} services x 4, one weight changed; best of {args.rounds}", flush=True)
        for name, path, change in (
            ("one file", one, change_one),
            (f"{files} files", split, change_split),
        ):
            t_full, config = best(lambda p=path: (PARTS.clear(), load_config(str(p)))[1])
            base = worker._Base()
            worker._answer(base, ("prime", 1, worker._chunks(config.virtual_servers), str(path)))
            t_table = best(lambda c=config: desired_table(c.virtual_servers))[0]
            answers = []

            def reload(
                p: Path = path,
                c: Callable[[], None] = change,
                base: worker._Base = base,
                answers: list[float] = answers,
            ) -> tuple[Any, ...]:
                c()
                start = time.perf_counter()
                answer = worker._answer(base, ("load", base.generation, str(p)))
                answers.append(time.perf_counter() - start)
                return answer

            for _ in range(ROUNDS[0]):
                answer = reload()
            data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
            t_unpickle, loaded = best(lambda d=data: pickle.loads(d))
            t_rebuild = (
                best(
                    lambda a=loaded, c=config: worker.rebuild(
                        c.virtual_servers, desired_table(c.virtual_servers), *a[2:]
                    )
                )[0]
                - t_table
            )
            print(
                f"  {name:>10}: first read {t_full:6.2f} s, table {t_table:5.2f} s; "
                f"reload in the worker {min(answers):6.3f} s (answer {len(data) // 1024} KiB, "
                f"unpickle {t_unpickle * 1000:.1f} ms, rebuild ~{max(t_rebuild, 0) * 1000:.0f} ms)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
