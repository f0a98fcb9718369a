"""A search that stops at the first hit: the key space is split into ranges, one unit
each; the unit that finds the key whose SHA-256 is the target reports it, and the
scheduler kills its siblings (queued ones never run, running ones are stopped) and
finishes with the key.

    python examples/search.py -c config/local.json --secret 1234567
"""

from __future__ import annotations

import hashlib

from _common import arguments, cluster, report

import rqcluster


def digest(key: int) -> str:
    return hashlib.sha256(str(key).encode()).hexdigest()


class Searcher:
    def scan(self, start: int, stop: int, target: str) -> int | None:
        for key in range(start, stop):
            if hashlib.sha256(str(key).encode()).hexdigest() == target:
                return key
        return None


class FirstHit(rqcluster.Scheduler):
    space = 8_000_000
    ranges = 8
    target = ""

    def init(self, seed: int) -> None:
        step = -(-self.space // self.ranges)
        self.units = {self.start_unit("scan", lo, min(lo + step, self.space), self.target)
                      for lo in range(0, self.space, step)}

    def unit_done(self, unit: int, value: int | None) -> None:
        self.units.discard(unit)
        if value is not None:
            self.kill(*self.units)
            self.finish(value)
        elif not self.units:
            self.finish(None)


def main() -> None:
    args = arguments(__doc__.splitlines()[0],
                     secret=(int, 1_234_567, "the key to find (its hash is the target)"),
                     space=(int, 8_000_000, "keys to search, from 0"),
                     ranges=(int, 8, "units to split the keys into"))
    FirstHit.target, FirstHit.space, FirstHit.ranges = digest(args.secret), args.space, \
        args.ranges
    job = cluster(args).submit("graph", graph=rqcluster.Graph(node=Searcher),
                               scheduler=FirstHit)
    report(job, job.result(timeout=args.timeout), "found")


if __name__ == "__main__":
    main()
