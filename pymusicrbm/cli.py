"""The ``pymusicrbm`` command: ``demo``, the studies ``dbn``, ``convrbm``, ``vae`` and ``tags``, ``features``, and
``predict`` / ``embed`` (a saved pipeline applied to audio files).

Under ``torchrun`` (``WORLD_SIZE`` > 1) the studies and ``features`` run on every rank in one process group:
features are extracted shard by shard, models train data-parallel, and rank 0 alone prints and writes OUT (the
other ranks write into a private scratch folder that is removed at the end).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

STUDIES = {  # subcommand -> (pipeline module, one-line help)
    "dbn": ("hamel_eck", "Hamel & Eck DBN pipeline: DFT frames -> DBN -> 5 s windows -> SVM (+ fine-tuned DBN, MFCC)"),
    "convrbm": ("conv_study", "ConvRBM study: mel spectrograms -> convolutional RBM/DBN -> pooled-map summaries -> classifiers"),
    "vae": ("vae_study", "Convolutional VAE: latent features -> classifiers, and audio generated from the latents"),
    "tags": ("tagging", "Autotagging: DBN features -> one logistic regression per tag; macro ROC-AUC / PR-AUC vs MFCC"),
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
    print(getattr(module, "headline_line", _study.headline_line)(results))
    return 0


def _apply_args(args) -> dict:
    return dict(batch_size=args.batch_size, cache_dir=args.cache_dir, n_jobs=args.jobs, on_error="skip",
                verbose=int(not args.quiet))


def _report_skipped(pipe, n: int) -> int:
    for path, reason in pipe.skipped_:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    return 1 if pipe.skipped_ else 0


def _predict(args) -> int:
    import csv
    import warnings

    from . import audio
    from .pipelines import load_pipeline

    pipe = load_pipeline(args.model)
    with warnings.catch_warnings():  # skipped files are listed below
        warnings.simplefilter("ignore", audio.AudioWarning)
        S = pipe.predict_scores(args.files, **_apply_args(args))
    rows = []
    for path, s in zip(args.files, S):
        if np.isnan(s).any():
            continue
        order = np.argsort(-s, kind="stable")
        pred = pipe.labels[order[0]] if pipe.task == "genres" else \
            [pipe.labels[j] for j in order if s[j] >= pipe.threshold]
        rows.append({"path": path, "prediction": pred, "scores": dict(zip(pipe.labels, s.round(6).tolist()))})
        top = ", ".join(f"{pipe.labels[j]} {s[j]:.2f}" for j in order[:args.top])
        shown = pred if pipe.task == "genres" else (",".join(pred) or "(no tag above the threshold)")
        print(f"{path}\t{shown}\t[{top}]")
    if args.out:
        out = Path(args.out)
        if out.suffix.lower() == ".json":
            from . import reporting

            reporting.write_json(out, {"task": pipe.task, "labels": pipe.labels, "predictions": rows,
                                       "skipped": [list(e) for e in pipe.skipped_]})
        else:  # CSV: path, prediction (tags joined by ';'), one score column per label
            with open(out, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["path", "prediction"] + pipe.labels)
                for r in rows:
                    pred = r["prediction"] if pipe.task == "genres" else ";".join(r["prediction"])
                    w.writerow([r["path"], pred] + [r["scores"][lab] for lab in pipe.labels])
        print(f"predictions of {len(rows)} files: {out}")
    return _report_skipped(pipe, len(args.files))


def _embed(args) -> int:
    import warnings

    from . import audio
    from .pipelines import load_pipeline

    pipe = load_pipeline(args.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", audio.AudioWarning)
        E = pipe.embed(args.files, **_apply_args(args))
    ok = ~np.isnan(E).any(1)
    kept = [p for p, k in zip(args.files, ok) if k]
    out = Path(args.out)
    if out.suffix.lower() == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("--out: writing .parquet needs pyarrow (pip install pyarrow); use a .npy file") \
                from None
        pq.write_table(pa.table({"path": kept, **{f"f{j}": E[ok, j] for j in range(E.shape[1])}}), out)
    else:
        if out.suffix.lower() != ".npy":
            raise ValueError(f"--out must end in .npy (or .parquet with pyarrow), got {str(out)!r}")
        np.save(out, E[ok].astype(np.float32), allow_pickle=False)
        out.with_suffix(".txt").write_text("\n".join(kept) + "\n")
    print(f"embeddings of {len(kept)} files, {E.shape[1]} features each: {out}"
          + ("" if out.suffix.lower() == ".parquet" else f" (rows in the order of {out.with_suffix('.txt')})"))
    return _report_skipped(pipe, len(args.files))


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
            if args.resume:  # rank 0 changes OUT only once every other rank has its copy
                distributed.barrier(what="copying rank 0's OUT to resume from")
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
    if "tags" not in (args.skip or []):
        from .pipelines import tagging

        print(f"\n== {STUDIES['tags'][1]}")
        print(f"generating the synthetic tagged set ({args.tag_clips} clips, {args.seconds:g} s)")
        tds = datasets.make_synthetic_tags(out / "data", n_clips=args.tag_clips, seconds=args.seconds,
                                           seed=args.seed, n_jobs=2, verbose=1)
        results = tagging.run(tds, out / "tags", quick=True, seed=args.seed, folds=args.folds,
                              cache_dir=str(out / "cache"))
        summary["tags"] = results
        line = tagging.headline_line(results)
        print(line)
        sections += [f"## {STUDIES['tags'][1]}", "", f"Synthetic tagged set: {len(tds)} clips, tags {tds.tags} "
                     f"(genre, lead instrument, tempo, mood, drums).", "", line, "", tagging.models_table(results),
                     "", "Full report: [tags/report.md](tags/report.md)", ""]
    summary["total_seconds"] = time.perf_counter() - t0
    sections.append(f"Total time: {summary['total_seconds']:.0f} s.")
    (out / "report.md").write_text("\n".join(sections) + "\n")
    reporting.write_json(out / "results.json", summary)
    print(f"\nreport: {out / 'report.md'}  ({summary['total_seconds']:.0f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pymusicrbm", description="RBM-family models for music audio.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="all studies on the built-in synthetic sets, with a report",
                       description="Generate the synthetic genre and tagged sets and run the studies on them (quick "
                                   "settings).")
    d.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    d.add_argument("--clips", type=int, default=10, help="clips per class (default 10)")
    d.add_argument("--seconds", type=float, default=15.0, help="clip length (default 15)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--folds", type=int, default=None, help="stratified folds by clip (default: each study's quick "
                                                           "setting, 2 or 3)")
    d.add_argument("--tag-clips", type=int, default=60, help="clips of the synthetic tagged set (default 60)")
    d.add_argument("--skip", nargs="*", choices=list(STUDIES), help="studies to leave out")
    d.set_defaults(func=_demo)

    for name, (module_name, help_) in STUDIES.items():
        s = sub.add_parser(name, help=help_, description=help_)
        s.add_argument("--data", required=True, help="a tag manifest (path<TAB>tag1,tag2) or a folder holding tags.tsv"
                       if name == "tags" else "GTZAN folder, folder of class subfolders, or CSV manifest")
        s.add_argument("--out", default=f"{name}_out", help=f"output folder (default {name}_out)")
        try:
            _pipeline(module_name).add_arguments(s)
        except ImportError:
            pass
        s.set_defaults(func=_run_study)

    for name, fn, help_ in (("predict", _predict, "genres or tags of audio files from a saved pipeline"),
                            ("embed", _embed, "features of audio files from a saved pipeline, as .npy")):
        a = sub.add_parser(name, help=help_, description=help_ + " (a study's --save-model DIR). Files that cannot "
                           "be read are skipped and listed on stderr; the exit status is then 1.")
        a.add_argument("--model", required=True, metavar="DIR", help="folder written by --save-model")
        a.add_argument("files", nargs="+", metavar="FILE", help="audio files")
        if name == "predict":
            a.add_argument("--out", help="also write the predictions: .csv (default) or .json")
            a.add_argument("--top", type=int, default=3, help="scores printed per file (3)")
        else:
            a.add_argument("--out", required=True, help=".npy (one row a readable file; their paths in the .txt "
                                                        "beside it), or .parquet when pyarrow is installed")
        a.add_argument("--batch-size", type=int, default=32, help="files read per batch (32)")
        a.add_argument("--cache-dir", default=None, help="feature cache (default: none)")
        a.add_argument("--jobs", type=int, default=2, help="threads for reading files (2)")
        a.add_argument("--quiet", action="store_true", help="no progress bar")
        a.set_defaults(func=fn)

    f = sub.add_parser("features", help="extract and cache features only")
    f.add_argument("--data", required=True)
    f.add_argument("--kind", choices=("dft", "mel", "mfcc"), default="dft")
    f.add_argument("--params", help='JSON feature parameters, e.g. \'{"n_mels": 96}\'')
    f.add_argument("--cache-dir", default="feature_cache")
    f.add_argument("--jobs", type=int, default=2)
    f.set_defaults(func=_features)
    return p


def main(argv=None) -> int:
    # Training runs many small parallel regions. OpenMP workers that spin ~300k rounds at each barrier (libgomp's
    # default) stall a busy or shared machine (2-core box, one core taken: 513->512 steps 17 ms, against 8 ms on one
    # thread); workers that never spin (OMP_WAIT_POLICY=PASSIVE) halve the speed of small steps on an idle one (513->50:
    # 1.5 ms against 0.78 ms). A short spin keeps the idle-machine speed (0.79 ms) and most of the busy-machine one
    # (9 ms). OpenMP reads this when torch loads, which importing pymusicrbm does not do; a value the user set wins.
    if "torch" not in sys.modules and "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "1000")
    args = build_parser().parse_args(argv)
    run = args.func
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and args.command in (*STUDIES, "features"):  # under torchrun
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
