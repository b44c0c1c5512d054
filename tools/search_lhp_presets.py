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
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGETS = {"large": (1.51e6, 30.27e6), "small": (0.37e6, 10.25e6)}


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
    p.add_argument("--target", choices=("large", "small", "both"), default="both")
    p.add_argument("--tol", type=float, default=0.03)
    p.add_argument("--top", type=int, default=10)
    args = p.parse_args(argv)
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
