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
CANDIDATES = {
    "s10_vote": dict(CPU),  # today's --quick run
    "s10_stats": dict(CPU, clip_features="stats", grid_search=True),
    "s30_stats": dict(CPU, seconds=30.0, clip_features="stats", grid_search=True),
    "s30_vote": dict(CPU, seconds=30.0, grid_search=True),
    "s30_stats_latent32": dict(CPU, seconds=30.0, clip_features="stats", grid_search=True, latent_dim=32),
    "s30_stats_logvar": dict(CPU, seconds=30.0, clip_features="stats", grid_search=True, features="mean+logvar"),
}

if __name__ == "__main__":
    main("vae_study", CANDIDATES, "clip_accuracy", ROOT / "benchmarks" / "results" / "devset_sweep_vae.json", __doc__)
