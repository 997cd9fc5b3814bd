"""Tuning a table too large to sweep whole: samples of growing size, and what they say about the
live table.

At fixed settings recall falls as a table grows (an HNSW search covers a smaller share of a larger
graph): on the real sentence embeddings of ../shared/data, new vectors at ef_search 40 get 0.954
on 28,000 rows and 0.894 on 199,000. So the sweep runs on the largest sample and the HNSW
candidates again on two smaller nested ones; each setting's recall deficit (1 - recall) is fitted
as a power of the row count and carried to the live table's size. The build parameters are chosen
on those predictions; the search-time settings are then confirmed on the live index at full size
(pgvkit confirm), since a prediction is a prediction.

IVFFlat candidates keep their rows per list: lists and probes grow with the table (pgvector:
rows / 1000 lists), so the share of the table a search reads, and with it recall, stays about the
same, while its latency grows with probes.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np

from ..audit.truth import MARGIN_SE
from ..migrator.plan import n_log_n
from .build import Config
from .sweep import SATURATED, SweepResult

__all__ = ["PREDICTED", "AUTO_SAMPLE", "DEFAULT_SLOPE", "DEFAULT_SLOPE_ERROR", "sample_sizes", "carry", "fall", "enough",
           "build_estimate", "ivfflat_lists"]

PREDICTED = "predicted at"  # how a carried point's note begins (and the tuned index's comment says it)
AUTO_SAMPLE = 100_000  # the largest sample `pgvkit tune` takes by itself (--rows overrides)
SMALLEST = 5_000  # below this a graph is too small to say how recall falls
DEFAULT_SLOPE = 0.45  # d(1 - recall) / d(log rows) when the samples cannot tell (real data: 0.35-0.6)
DEFAULT_SLOPE_ERROR = 0.15  # and its standard error then: the spread of the falls measured on real data
SLOPE_RANGE = (-0.3, 1.0)  # a rise no steeper than measured (topics: -0.15), a fall no more than in proportion
SLOPE_FLOOR = 0.1  # what a flatter fit or a rise becomes unless the samples show it beyond their noise
MIN_DEFICIT = 0.003  # deficits smaller than this are within a few queries' noise: not fitted


def sample_sizes(live_rows: int, rows: int | None) -> list[int]:
    """The sample sizes to sweep, largest last: the whole table when it is no larger than the
    sample (or `rows`), else the sample and two nested halves of it."""
    largest = min(rows or AUTO_SAMPLE, live_rows) if live_rows else (rows or 20_000)
    if live_rows <= largest or largest < 4 * SMALLEST:
        return [largest]
    return [largest // 4, largest // 2, largest]


def enough(target: float, live_rows: int, sample: int) -> float:
    """The recall on the sample past which a candidate's larger search settings are not swept: what
    would still meet `target` at the live size after the steepest fall carried (the deficit growing
    with the rows, SLOPE_RANGE[1]), at most SATURATED. Not a typical fall: on 1,000,000 densified real
    rows new vectors fell as rows^0.73, and a sweep stopped at what rows^0.45 allowed left tune
    nothing predicted to reach 0.95 one setting short of it."""
    return min(SATURATED, 1 - (1 - target) / max(1.0, live_rows / sample) ** SLOPE_RANGE[1])


def ivfflat_lists(rows: int) -> int:
    """pgvector's guidance: rows / 1000 lists up to 1M rows, sqrt(rows) above."""
    return max(1, round(rows / 1000) if rows <= 1_000_000 else round(math.sqrt(rows)))


def _slope(sizes: list[int], deficits: list[float], errors: list[float] | None = None) -> tuple[float, float] | None:
    """Least-squares slope of log(deficit) over log(rows) and its standard error from the deficits'
    own (`errors`: each deficit's standard error, 0 when not known); None when a deficit is too
    small to fit."""
    if len(sizes) < 2 or min(deficits) < MIN_DEFICIT:
        return None
    x, y = np.log(np.array(sizes, float)), np.log(np.array(deficits, float))
    dx = x - x.mean()
    relative = np.array(errors if errors is not None else [0.0] * len(sizes), float) / np.array(deficits, float)
    return float(np.polyfit(x, y, 1)[0]), float(np.sqrt(np.sum(dx ** 2 * relative ** 2)) / np.sum(dx ** 2))


def fall(fits: list[tuple[float, float]]) -> tuple[float, float]:
    """The slope carried and its standard error, from each setting's (slope, standard error): their
    medians, the slope within SLOPE_RANGE. A median below SLOPE_FLOOR is taken only when it lies below it by more than
    MARGIN_SE standard errors (the samples show recall holding up, or rising, with size beyond
    their noise: 1,000,000 topic rows measured the -0.15 their samples fitted); else the floor."""
    slope = float(np.median([s for s, _ in fits]))
    error = float(np.median([e for _, e in fits]))
    if slope < SLOPE_FLOOR and slope + MARGIN_SE * error >= SLOPE_FLOOR:
        slope = SLOPE_FLOOR
    return min(max(slope, SLOPE_RANGE[0]), SLOPE_RANGE[1]), error


def _error(figures: dict) -> float:
    """A measured recall's standard error, from the margin recall_low keeps below it."""
    low = figures.get("low", float("nan"))
    return 0.0 if math.isnan(low) else max(0.0, (figures["recall"] - low) / MARGIN_SE)


def _carried(value: float, slope: float, factor: float) -> float:
    return 1.0 - min(1.0, (1.0 - value) * factor ** slope)


def _range(v: dict, slope: float, error: float, factor: float) -> dict:
    """A shape's figures carried: the mean by the fitted fall; its range from the sample's own noise
    (MARGIN_SE standard errors of the mean, as `low` keeps it) and the fall's standard error, each
    end taken the way that widens it, within SLOPE_RANGE as the mean's fall is (no end falls faster
    than in proportion to the rows: the bound `enough` stops a sweep by). `low` becomes the range's
    pessimistic end: what the choice uses."""
    high = min(1.0, 2 * v["recall"] - v["low"])
    return {**v, "recall": _carried(v["recall"], slope, factor), "fresh": _carried(v["fresh"], slope, factor),
            "low": _carried(v["low"], min(slope + error, SLOPE_RANGE[1]), factor),
            "high": _carried(high, max(slope - error, SLOPE_RANGE[0]), factor),
            "slope": (round(slope, 3), round(error, 3))}


def carry(results: dict[int, SweepResult], live_rows: int) -> tuple[SweepResult, dict]:
    """The largest sample's sweep with every figure carried to `live_rows`: HNSW recall by each
    candidate's fitted slope (the median over its settings, per shape; a candidate swept only on
    the largest sample takes the slope of the cheapest one of its kind, swept on all), with a range
    (`low`, `high`: see _range) that the choice reads at its low end; IVFFlat lists and probes
    scaled with the rows; latency and build time scaled too. Returns the carried result and the
    slopes used ({(index label, shape): slope})."""
    sizes = sorted(results)
    top = results[sizes[-1]]
    factor = live_rows / sizes[-1]
    slopes: dict[tuple[str, str], float] = {}
    errors: dict[tuple[str, str], float] = {}
    by_size = {n: {(p.config.label, p.search_value, p.rerank): p for p in results[n].points if p.iterative is None}
               for n in sizes}
    carried = SweepResult(top.workload, top.k, builds=list(top.builds), live_rows=live_rows, dims=top.dims,
                          samples=sizes)
    for p in top.points:
        if p.iterative is not None or not p.index_used:
            continue
        q = copy.deepcopy(p)
        if p.config.method == "hnsw":
            for shape in p.shapes:
                key = (p.config.label, shape)
                if key not in slopes:
                    fitted = [_slope(sizes, [1 - by_size[n][k].shapes[shape]["recall"] for n in sizes],
                                     [_error(by_size[n][k].shapes[shape]) for n in sizes])
                              for k in by_size[sizes[-1]] if k[0] == p.config.label
                              and all(k in by_size[n] and by_size[n][k].index_used for n in sizes)]
                    fitted = [s for s in fitted if s is not None]
                    if fitted:
                        slopes[key], errors[key] = fall(fitted)
                    else:  # not rebuilt on the smaller samples: the cheapest graph's fall, else the default
                        kin = [k_ for k_ in slopes if k_[1] == shape
                               and k_[0].startswith(p.config.label.split("(")[0] + "(")]
                        slopes[key], errors[key] = ((slopes[kin[0]], errors[kin[0]]) if kin
                                                    else (DEFAULT_SLOPE, DEFAULT_SLOPE_ERROR))
                q.shapes[shape] = _range(q.shapes[shape], slopes[key], errors[key], factor)
            q.p50_ms, q.p95_ms, q.p99_ms = (x * math.log(live_rows) / math.log(sizes[-1])
                                            for x in (p.p50_ms, p.p95_ms, p.p99_ms))
            q.build_s = build_estimate(results, p.config, live_rows)
        else:
            lists = dict(p.config.params)["lists"]
            scaled = max(1, round(lists * factor))
            q.config = replace(p.config, params=(("lists", scaled),))
            q.search_value = min(scaled, max(1, round(p.search_value * scaled / lists)))
            q.p50_ms, q.p95_ms, q.p99_ms = (x * q.search_value / p.search_value for x in (p.p50_ms, p.p95_ms, p.p99_ms))
            q.build_s = p.build_s * factor * (scaled / lists)  # k-means: rows x lists
        q.decided_by = min(q.shapes, key=lambda name: q.shapes[name]["low"])
        worst = q.shapes[q.decided_by]
        q.recall, q.recall_p5, q.fresh_recall, q.recall_low = worst["recall"], worst["p5"], worst["fresh"], worst["low"]
        q.note = (f"{PREDICTED} {live_rows:,} rows from samples of " + ", ".join(f"{n:,}" for n in sizes)
                  if p.config.method == "hnsw" else
                  f"lists and probes scaled x{factor:.1f} to {live_rows:,} rows: the share read, and recall, as measured")
        carried.points.append(q)
    carried.slopes = {f"{label} / {shape}": (round(v, 3), round(errors[label, shape], 3))
                      for (label, shape), v in slopes.items()}
    return carried, slopes


def build_estimate(results: dict[int, SweepResult], config: Config, rows: int) -> float:
    """Seconds to build `config` on `rows` rows: its build on the largest sample it was built on,
    scaled as n log n (each insert searches a graph of log n layers). Not a power fitted to the
    sample builds: over a tenfold extrapolation a little noise in two builds of seconds swings it
    (HNSW (16, 64) on densified real rows: 21 s and 47 s at 50,000 and 100,000 rows fitted rows^1.16,
    11 min for 1,000,000, which built in 8). Measured on 2 cores, full-size build over this estimate:
    1,000,000 topic rows 0.79-0.90 ((24, 100)), 1,000,000 densified real rows 1.03 ((24, 100)) and
    0.84 ((16, 64)), 198,000 real rows 1.22 ((24, 100))."""
    seen = sorted((n, b["build_s"]) for n, r in results.items() for b in r.builds if b["index"] == config.label)
    if not seen:
        return float("nan")
    n, t = seen[-1]
    return n_log_n(t, n, rows)
