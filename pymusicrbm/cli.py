"""The ``pymusicrbm`` command: ``demo``, ``dbn``, ``convrbm``, ``vae`` and ``features``.

Under ``torchrun`` (``WORLD_SIZE`` > 1) ``dbn``, ``convrbm``, ``vae`` and ``features`` run on every rank in one
process group: features are extracted shard by shard, models train data-parallel, and rank 0 alone prints and
writes OUT (the other ranks write into a private scratch folder that is removed at the end).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

STUDIES = {  # subcommand -> (pipeline module, one-line help)
    "dbn": ("hamel_eck", "Hamel & Eck DBN pipeline: DFT frames -> DBN -> 5 s windows -> SVM (+ fine-tuned DBN, MFCC)"),
    "convrbm": ("conv_study", "ConvRBM study: mel spectrograms -> convolutional RBM/DBN -> 5 poolings -> classifiers"),
    "vae": ("vae_study", "Convolutional VAE: latent features -> classifiers, and audio generated from the latents"),
}


def _pipeline(name: str):
    return importlib.import_module(f"pymusicrbm.pipelines.{name}")


def _options(args, skip=("command", "data", "out", "func")) -> dict:
    """argparse namespace -> keyword options, leaving out unset (None) values so the pipeline defaults apply."""
    return {k: v for k, v in vars(args).items() if k not in skip and v is not None}


def _run_study(args) -> int:
    from .pipelines import _study

    module = _pipeline(STUDIES[args.command][0])
    results = module.run(args.data, args.out, **_options(args))
    print(f"results: {Path(args.out) / 'results.json'}   report: {Path(args.out) / 'report.md'}")
    print(_study.headline_line(results))
    return 0


def _features(args) -> int:
    from . import audio, datasets

    ds = datasets.load_dataset(args.data)
    params = json.loads(args.params) if args.params else {}
    t0 = time.perf_counter()
    feats, errors = audio.extract(ds, args.kind, params, cache_dir=args.cache_dir, n_jobs=args.jobs,
                                  return_errors=True)  # (under torchrun: each rank extracts its share)
    ok = sum(f is not None for f in feats)
    print(f"{args.kind}: {ok} of {len(feats)} clips in {time.perf_counter() - t0:.1f} s, cached in {args.cache_dir}")
    for name, reason in errors:
        print(f"  skipped {name}: {reason}")
    return 0


def _distributed(args) -> int:
    """Run the command on this rank of the ``torchrun`` process group (see the module docstring). All ranks read
    the same dataset and share one feature cache (OUT/cache unless --cache-dir): a folder every machine sees.
    With --resume the other ranks start from a copy of rank 0's OUT, so every rank takes the same decisions."""
    import contextlib
    import shutil
    import tempfile

    from . import distributed

    distributed.init_from_env()
    main = distributed.is_main()
    scratch = None
    try:
        if args.func is _run_study:
            if args.cache_dir is None:
                args.cache_dir = str(Path(args.out) / "cache")
            if not main:
                scratch = tempfile.mkdtemp(prefix=f"pymusicrbm-rank{distributed.rank()}-")
                if args.resume and Path(args.out).is_dir():
                    shutil.copytree(args.out, scratch, dirs_exist_ok=True,
                                    ignore=lambda d, names: [n for n in names if Path(d, n) == Path(args.cache_dir)])
                args.out, args.verbose = scratch, 0
        quiet = contextlib.redirect_stdout(open(os.devnull, "w")) if not main else contextlib.nullcontext()
        with quiet, distributed.replicated_inputs():
            return args.func(args)
    except distributed.DistributedError as err:
        print(f"pymusicrbm {args.command} (rank {distributed.rank()}): error: {err}", file=sys.stderr)
        return 1
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _demo(args) -> int:
    from . import datasets, reporting
    from .pipelines import _study

    out = reporting.prepare_out_dir(args.out)
    t0 = time.perf_counter()
    print(f"generating the synthetic genre set ({args.clips} clips per class, {args.seconds:g} s) in {out / 'data'}")
    ds = datasets.make_synthetic_genres(out / "data", n_per_class=args.clips, seconds=args.seconds, seed=args.seed,
                                        n_jobs=2, verbose=1)
    studies = [s for s in ("dbn", "convrbm", "vae") if s not in (args.skip or [])]
    summary, sections = {}, ["# pymusicrbm demo", "",
                             f"Synthetic genre set: {len(ds)} clips, {len(ds.classes)} classes, "
                             f"{args.seconds:g} s each (seed {args.seed}).", ""]
    for study in studies:
        module_name, title = STUDIES[study]
        try:
            module = _pipeline(module_name)
        except ImportError as err:
            print(f"{study}: not available ({err})", file=sys.stderr)
            continue
        print(f"\n== {title}")
        sub = out / study
        results = module.run(ds, sub, quick=True, seed=args.seed, folds=args.folds, cache_dir=str(out / "cache"))
        summary[study] = results
        line = _study.headline_line(results)
        print(line)
        sections += [f"## {title}", "", line, "", _study.models_table(results), "",
                     f"Full report: [{study}/report.md]({study}/report.md)", ""]
    summary["total_seconds"] = time.perf_counter() - t0
    sections.append(f"Total time: {summary['total_seconds']:.0f} s.")
    (out / "report.md").write_text("\n".join(sections) + "\n")
    reporting.write_json(out / "results.json", summary)
    print(f"\nreport: {out / 'report.md'}  ({summary['total_seconds']:.0f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pymusicrbm", description="RBM-family models for music audio.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="all studies on the built-in synthetic genre set, with a report",
                       description="Generate the synthetic genre set and run the studies on it (quick settings).")
    d.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    d.add_argument("--clips", type=int, default=10, help="clips per class (default 10)")
    d.add_argument("--seconds", type=float, default=15.0, help="clip length (default 15)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--folds", type=int, default=None, help="stratified folds by clip (default: each study's quick "
                                                           "setting, 2 or 3)")
    d.add_argument("--skip", nargs="*", choices=list(STUDIES), help="studies to leave out")
    d.set_defaults(func=_demo)

    for name, (module_name, help_) in STUDIES.items():
        s = sub.add_parser(name, help=help_, description=help_)
        s.add_argument("--data", required=True, help="GTZAN folder, folder of class subfolders, or CSV manifest")
        s.add_argument("--out", default=f"{name}_out", help=f"output folder (default {name}_out)")
        try:
            _pipeline(module_name).add_arguments(s)
        except ImportError:
            pass
        s.set_defaults(func=_run_study)

    f = sub.add_parser("features", help="extract and cache features only")
    f.add_argument("--data", required=True)
    f.add_argument("--kind", choices=("dft", "mel", "mfcc"), default="dft")
    f.add_argument("--params", help='JSON feature parameters, e.g. \'{"n_mels": 96}\'')
    f.add_argument("--cache-dir", default="feature_cache")
    f.add_argument("--jobs", type=int, default=2)
    f.set_defaults(func=_features)
    return p


def main(argv=None) -> int:
    # Training runs many small parallel regions: OpenMP workers that sleep at barriers instead of spinning keep a
    # busy or shared machine from stalling (measured 4x faster steps on a loaded 2-core box). OpenMP reads this when
    # torch loads, which importing pymusicrbm does not do; a value the user set wins.
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    run = args.func
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and args.command != "demo":  # started by torchrun
        run = _distributed
    try:
        return run(args)
    except ValueError as err:  # bad input: one clear line, not a traceback
        print(f"pymusicrbm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\npymusicrbm {args.command}: interrupted; finished folds and caches are kept (use --resume)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
