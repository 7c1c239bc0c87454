"""Sweep of the VAE study's settings that need retraining on the real-music development set (issue 11 item 3).

Candidates differ in the audio used (seconds, excerpts), the network and its latent size and how a clip's excerpts
become its features (a vote over excerpts, or the mean and std of their latents); the classifiers' C and gamma are
chosen inside every run by grouped CV on training clips. All candidates use the demo's CPU-sized network and
schedule (:data:`pymusicrbm.pipelines.vae_study.QUICK`) unless they say otherwise. The winner by mean outer clip
accuracy on the sweep protocol (3 folds, seed 1) is evaluated on 5 folds, seed 0 (benchmarks/_sweep.py).

    nice -n 10 python benchmarks/devset_sweep_vae.py --data /work/devset --cache-dir /work/devset_cache \\
        --out /work/devset_runs/vae_sweep
"""
from __future__ import annotations

from _sweep import ROOT, main

from pymusicrbm.pipelines.vae_study import QUICK

CPU = {k: v for k, v in QUICK.items() if k not in ("folds", "num_threads")}
# Whole clips (seconds='all'; mel statistics over whole clips scored 0.71 clip accuracy against 0.63 over the first
# 30 s, 3 folds, seed 1) with non-overlapping excerpts (excerpt_hop=128 = the excerpt length: ~15 a clip).
WHOLE = dict(CPU, seconds="all", grid_search=True)
CANDIDATES = {
    "s10_vote": dict(CPU),  # today's --quick run
    "all_stats": dict(WHOLE, clip_features="stats"),
    "all_vote": dict(WHOLE),
    "all_stats_latent32": dict(WHOLE, clip_features="stats", latent_dim=32),
    "all_stats_logvar": dict(WHOLE, clip_features="stats", features="mean+logvar"),
}

if __name__ == "__main__":
    main("vae_study", CANDIDATES, "clip_accuracy", ROOT / "benchmarks" / "results" / "devset_sweep_vae.json", __doc__)
