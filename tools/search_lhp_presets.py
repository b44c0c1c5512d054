"""Search Lite-HRNet Plus layouts that land on the paper's Table 1 complexity figures.

The paper reports Lite-HRNet Plus at 96x96 with 98 landmarks as 1.51M params / 30.27 mmcv-style
MFLOPs (large) and 0.37M / 10.25 (small) but not its widths, modules or ratios. Every figure
here comes from :func:`lhp_tf.model.flops.count` on built Keras graphs. Costs add up per module,
so for each (widths, stem, SCAF ratio, blocks, iterative head) family we build four small probe
models (modules (1,1,1), (2,1,1), (1,2,1), (1,1,2)), take the per-module costs as differences
and extrapolate exactly to every modules-per-stage tuple of the grid; the chosen presets are then
re-counted as full models (``lhp flops --model lhp-large``).

    python tools/search_lhp_presets.py            # both targets, prints candidates within 3%
    python tools/search_lhp_presets.py --target small --top 20
    python tools/search_lhp_presets.py --target table2a   # FLOP-matched fusion ablations

``--target table2a`` matches the paper's Table 2a instead: each conventional fusion (pointwise,
bottleneck, group) at the mmcv-style MFLOPs the paper reports for it. Rule: keep everything of
``lhp-large`` (modules (3, 8, 3), stem 32, blocks, CRW ratio, MR head, 96x96, group count and
bottleneck ratio 4) and shrink the branch widths with one MobileNet-style width multiplier
``alpha``: each of (40, 80, 160, 320) times alpha, rounded to the nearest multiple of 4 (even for
CCW, divisible into the 4 fusion groups). Depth and the number of fusion sites stay those of the
SCAF model, so only the fusion type and the channel count differ between the Table 2a rows.
Exact 1:2:4:8 widths move the cost 7-11% per step of 2 channels (group fusion, whose widths must
divide by 4, gets 25.29 MFLOPs at 28.. and 28.62 at 32..: -2.4%); cutting modules at widths 40..
instead (per-module extrapolation as above) leaves pointwise fusion a single tuple within 2%,
(1, 1, 2), 4 modules against the SCAF model's 14, and a different depth for every row. The cost
is monotonic in alpha, so a bisection over the distinct width tuples finds the two that bracket
the target with a handful of full-model counts.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGETS = {"large": (1.51e6, 30.27e6), "small": (0.37e6, 10.25e6)}
#: Table 2a: mmcv-style FLOPs of lhp-large with each conventional fusion block (96x96, WFLW).
TABLE2A_FLOPS = {"pointwise": 29.67e6, "bottleneck": 29.29e6, "group": 29.31e6}
LHP_LARGE_WIDTHS = (40, 80, 160, 320)
WIDTH_DIVISOR = 4


def scaled_widths(alpha: float, base: tuple[int, ...] = LHP_LARGE_WIDTHS,
                  divisor: int = WIDTH_DIVISOR) -> tuple[int, ...]:
    """Branch widths times ``alpha``, each rounded to the nearest multiple of ``divisor``."""
    return tuple(divisor * max(1, round(w * alpha / divisor)) for w in base)


def count_widths(fusion: str, widths: tuple[int, ...]) -> list[float]:
    """[params, conv_macs, mmcv_flops] of lhp-large with this fusion and these branch widths.

    Built under a StatelessScope: variables are not initialised, which the count never reads
    and which takes a third of the build time."""
    import keras

    from lhp_tf.config import ModelConfig
    from lhp_tf.model.flops import count_config

    with keras.StatelessScope():
        c = count_config(ModelConfig(arch="lhp-large", fusion=fusion, channels=widths), 98)
    return [c.params, c.conv_macs, c.mmcv_flops]


def match_table2a(fusion: str, target: float, log: bool = True) -> list[tuple]:
    """The two width tuples of the alpha rule whose mmcv FLOPs bracket ``target``, closest first,
    each as (relative error, alpha, widths, params, conv_macs, mmcv_flops)."""
    alphas = [a / 320 for a in range(160, 321)]  # alpha 0.5 .. 1
    tuples: list[tuple[float, tuple[int, ...]]] = []
    for a in alphas:
        w = scaled_widths(a)
        if not tuples or tuples[-1][1] != w:
            tuples.append((a, w))
    seen: dict[int, list[float]] = {}

    def cost(i: int) -> float:
        if i not in seen:
            seen[i] = count_widths(fusion, tuples[i][1])
            if log:
                print(f"    {fusion} widths={tuples[i][1]}: {seen[i][2] / 1e6:.2f} mmcv MFLOPs",
                      flush=True)
        return seen[i][2]

    lo, hi = 0, len(tuples) - 1  # invariant once narrowed: cost(lo) < target <= cost(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cost(mid) < target:
            lo = mid
        else:
            hi = mid
    out = []
    for i in (lo, hi):
        params, macs, flops = (seen[i] if i in seen else count_widths(fusion, tuples[i][1]))
        out.append((flops / target - 1, tuples[i][0], tuples[i][1], params, macs, flops))
    return sorted(out, key=lambda h: abs(h[0]))


def table2a(tol: float) -> int:
    """Print the FLOP-matched layout of each Table 2a fusion; 1 if one misses ``tol``."""
    missed = 0
    for fusion, target in TABLE2A_FLOPS.items():
        print(f"== {fusion}: target {target / 1e6:.2f} mmcv MFLOPs (Table 2a; lhp-large layout, "
              f"widths {LHP_LARGE_WIDTHS} x alpha, multiples of {WIDTH_DIVISOR})", flush=True)
        hits = match_table2a(fusion, target)
        for err, alpha, widths, params, macs, flops in hits:
            print(f"  channels={widths} (alpha {alpha:.4f}): {params / 1e6:.3f}M params, "
                  f"{macs / 1e6:.2f} conv MMACs, {flops / 1e6:.2f} mmcv MFLOPs ({err:+.1%})")
        missed += abs(hits[0][0]) > tol
    return int(missed > 0)


def probe(family: dict) -> tuple[list[float], list[list[float]]]:
    """(base costs, per-module costs per stage) as [params, conv_macs, mmcv_flops]."""
    from lhp_tf.config import ModelConfig
    from lhp_tf.model.flops import count_config

    def cost(modules: tuple[int, int, int]) -> list[float]:
        cfg = ModelConfig(arch="lhp-large", modules=modules, **family)
        c = count_config(cfg, 98)
        return [c.params, c.conv_macs, c.mmcv_flops]

    m0 = cost((1, 1, 1))
    per = []
    for s in range(3):
        mods = [1, 1, 1]
        mods[s] = 2
        ms = cost(tuple(mods))
        per.append([a - b for a, b in zip(ms, m0, strict=True)])
    base = [m0[q] - sum(p[q] for p in per) for q in range(3)]
    return base, per


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", choices=("large", "small", "both", "table2a"), default="both")
    p.add_argument("--tol", type=float, default=None,
                   help="relative tolerance (default 0.03; 0.02 for table2a)")
    p.add_argument("--top", type=int, default=10)
    args = p.parse_args(argv)
    if args.target == "table2a":
        return table2a(0.02 if args.tol is None else args.tol)
    if args.tol is None:
        args.tol = 0.03
    targets = list(TARGETS) if args.target == "both" else [args.target]
    families = []
    for t in targets:
        if t == "large":
            options = itertools.product((40,), (32,), (4, 8), (True, False))
        else:
            options = itertools.product((16, 20, 24, 30), (16,), (2, 4, 8), (True, False))
        for c, stem, r, it in options:
            families.append((t, dict(channels=(c, 2 * c, 4 * c, 8 * c), stem_channels=stem,
                                     scaf_ratio=r, iterative_head=it, blocks=(2, 2, 2),
                                     fusion="scaf", head="mr")))
    grid = list(itertools.product(range(1, 5), range(1, 9), range(1, 5)))
    for t in targets:
        tp, tf_ = TARGETS[t]
        hits = []
        for name, fam in families:
            if name != t:
                continue
            base, per = probe(fam)
            for mods in grid:
                params, macs, flops = (base[q] + sum(m * per[s][q] for s, m in enumerate(mods))
                                       for q in range(3))
                ep, ef = params / tp - 1, flops / tf_ - 1
                hits.append((max(abs(ep), abs(ef)), mods, fam, params, macs, flops))
        hits.sort(key=lambda h: h[0])
        within = [h for h in hits if h[0] <= args.tol]
        print(f"== {t}: target {tp / 1e6:.2f}M params, {tf_ / 1e6:.2f} mmcv MFLOPs "
              f"(96x96, 98 landmarks); {len(within)} candidates within {args.tol:.0%}, closest first")
        for err, mods, fam, params, macs, flops in hits[: max(args.top, 1)]:
            print(f"  modules={mods} channels={fam['channels']} stem={fam['stem_channels']} "
                  f"blocks={fam['blocks']} scaf_ratio={fam['scaf_ratio']} "
                  f"iterative_head={fam['iterative_head']}: {params / 1e6:.3f}M params, "
                  f"{macs / 1e6:.2f} conv MMACs, {flops / 1e6:.2f} mmcv MFLOPs (worst {err:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
