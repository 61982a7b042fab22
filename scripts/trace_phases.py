#!/usr/bin/env python3
"""Median per-step phases of `tapegrad train --trace` files.

    python3 scripts/trace_phases.py run.rank0.json [more.json ...] [--skip 5]

For each file: the median over steps (after the first --skip steps, default
5, which warm up the arenas and caches) of the step (data + forward +
backward + ddp wait + optimizer), of forward + backward, of the `ddp wait`
span (the communication backward did not hide) and of the optimizer.
"""
import json
import statistics
import sys

PHASES = ("data", "forward", "backward", "ddp wait", "optimizer")


def phases(path, skip):
    spans, steps = {}, {}
    for e in json.load(open(path))["traceEvents"]:
        if e.get("ph") != "X" or e.get("tid") != 0 or e["name"] not in PHASES:
            continue
        s = e["args"].get("step", 0)
        if s < skip:
            continue
        ms = e["dur"] / 1000.0
        spans.setdefault(e["name"], []).append(ms)
        steps[s] = steps.get(s, 0.0) + ms
    med = lambda k: statistics.median(spans[k]) if k in spans else 0.0
    return (statistics.median(steps.values()) if steps else float("nan"),
            med("forward") + med("backward"), med("ddp wait"), med("optimizer"))


def main(argv):
    skip = 5
    if "--skip" in argv:
        i = argv.index("--skip")
        skip = int(argv[i + 1])
        del argv[i:i + 2]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    print("%-28s %9s %9s %9s %9s" % ("file", "step ms", "fwd+bwd", "wait", "optim"))
    for p in argv:
        print("%-28s %9.1f %9.1f %9.1f %9.1f" % ((p[-28:],) + phases(p, skip)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
