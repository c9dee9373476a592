"""``python -m benchmark.data prepare <task> ...``, ``info <dir>``, ``score-inputs <source>``,
``complexity <source>`` (the GLCM complexity of every split, train against test) and
``noise-scaling`` (the simulators' noise against a scanner's physics)."""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from benchmark.base import markdown
from benchmark.data import dataset, prepared, sources
from benchmark.data.io import DataError
from benchmark.base.vocabulary import ALL_IN_ONE, MODALITIES, MODALITY

# what to prepare -> (modality, reader of --src, source name for the manifest). The task names are
# the run configuration's (benchmark.harness.config.TASKS); ``paired`` is any LQ/HQ files of --modality.
READERS = {
    "mri_sr": ("mri", sources.ixi_cases, "IXI T2 (NIfTI)"),
    "ct_denoise": ("ct", sources.aapm_cases, "AAPM Low-Dose CT Grand Challenge (DICOM)"),
    "pet_synthesis": ("pet", sources.paired_cases, "paired HQ/LQ PET volumes"),
    "paired": (None, sources.paired_cases, "paired HQ/LQ files"),
}
assert set(READERS) - {"paired"} == set(MODALITY)
PHANTOM_TASKS = tuple(f"phantom-{m}" for m in MODALITIES)


def _prepare(args) -> dict:
    if args.task == ALL_IN_ONE:
        if not args.from_:
            raise DataError(f"{ALL_IN_ONE} needs --from with the prepared datasets to combine")
        return dataset.write_all_in_one(args.out, args.from_)
    if args.task in PHANTOM_TASKS:
        modality = args.task.removeprefix("phantom-")
        cases = sources.phantom_cases(modality, tuple(args.count), args.size, args.seed)
        return prepared.write(args.out, cases, task=args.task, modality=modality,
                              source=f"phantom (size {args.size}, seed {args.seed})", progress=not args.quiet)
    modality, reader, source = READERS[args.task]
    if args.src is None:
        raise DataError(f"task {args.task!r} reads raw files: give --src")
    modality = args.modality or modality
    if modality is None:
        raise DataError(f"task 'paired' needs --modality ({', '.join(MODALITIES)})")
    cases = reader(args.src, series=args.series) if args.task == "ct_denoise" else reader(args.src)
    return prepared.write(args.out, cases, task=args.task, modality=modality,
                          source=f"{source}: {args.src}", skip_bad=args.skip_bad, progress=not args.quiet)


def _summary(manifest: dict) -> str:
    lines = [f"task {manifest['task']} ({manifest['modality']}), source: {manifest.get('source', '-')}"]
    for split, entry in manifest["splits"].items():
        shape = "x".join(map(str, entry.get("shape") or [])) or "-"
        ranges = ", ".join(f"{k} [{v[0]:.4g}, {v[1]:.4g}]" for k, v in entry.get("value_range", {}).items())
        lines.append(f"  {split:<5} {entry['count']:>7} slices  {shape:>9}  {len(entry.get('cases', []))} cases  {ranges}")
    for part in manifest.get("components", []):
        lines.append(f"  component {part['task']} ({part['modality']}): {part['path']}")
    if manifest.get("skipped"):
        lines.append(f"  skipped {len(manifest['skipped'])} inputs:")
        lines += [f"    {s['split']}/{s['case']}: {s['reason']}" for s in manifest["skipped"]]
    return "\n".join(lines)


def _score_inputs(source: str, split: str, phantom_size: int) -> str:
    """Mean PSNR / SSIM / RMSE of the low-quality inputs against the high-quality images."""
    from tqdm import tqdm

    from benchmark.results import metrics
    data = dataset.open_dataset(source, split, phantom_size=phantom_size)
    parts = data.datasets if hasattr(data, "datasets") else [data]
    rows = []
    for part in parts:
        scores = []
        for i in tqdm(range(len(part)), desc=f"score {part.task}", unit="image", leave=False):
            lq, hq = (np.asarray(a[i], dtype=np.float64) for a in (part.lq, part.hq))   # physical units
            scores.append(metrics.evaluate(lq, hq, part.modality))
        mean = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
        rows.append([part.task, split, len(scores), f"{mean['psnr']:.2f}", f"{mean['ssim']:.4f}", f"{mean['rmse']:.4g}"])
    return markdown.table(["task", "split", "images", "PSNR", "SSIM", "RMSE"], rows, "llrrrr")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="turn raw data (or phantoms) into a prepared dataset")
    prep.add_argument("task", choices=list(READERS) + list(PHANTOM_TASKS) + [ALL_IN_ONE],
                      help="the run task the data are for (mri_sr: IXI, ct_denoise: AAPM, pet_synthesis: PET "
                           "pairs), paired (any LQ/HQ files of --modality), phantom-<modality>, or all_in_one")
    prep.add_argument("--src", help="the raw data folder")
    prep.add_argument("--out", required=True, help="the prepared dataset folder to create")
    prep.add_argument("--modality", choices=list(MODALITIES), help="for task 'paired'")
    prep.add_argument("--series", help="ct_denoise: the series to use when a patient has several, e.g. 3mm")
    prep.add_argument("--skip-bad", action="store_true", help="skip unreadable inputs (listed in the manifest)")
    prep.add_argument("--from", dest="from_", nargs="+", help="all_in_one: the prepared datasets to combine")
    prep.add_argument("--count", type=int, nargs=3, default=list(sources.PHANTOM_COUNTS), metavar=("TRAIN", "VAL", "TEST"),
                      help="phantoms per split (default: %(default)s)")
    prep.add_argument("--size", type=int, default=128, help="phantom size (default: 128)")
    prep.add_argument("--seed", type=int, default=0, help="phantom seed (default: 0)")
    prep.add_argument("--quiet", action="store_true", help="no progress bar")
    info = commands.add_parser("info", help="print a prepared dataset's manifest")
    info.add_argument("folder")
    info.add_argument("--json", action="store_true", help="the whole manifest as JSON")
    info.add_argument("--verify", action="store_true", help="also check the files' sha256")
    score = commands.add_parser("score-inputs", help="PSNR / SSIM / RMSE of the LQ inputs against HQ")
    score.add_argument("source", help="a prepared folder or phantom-ct / phantom-mri / phantom-pet")
    score.add_argument("--split", default="test", choices=sources.SPLITS)
    score.add_argument("--size", type=int, default=128, help="phantom size (default: 128)")
    complex_ = commands.add_parser("complexity", help="the GLCM complexity of every split's HQ images "
                                                       "(benchmark.data.complexity) and a KS test of train against test")
    complex_.add_argument("source", help="a prepared folder or phantom-ct / phantom-mri / phantom-pet")
    complex_.add_argument("--size", type=int, default=128, help="phantom size (default: 128)")
    commands.add_parser("noise-scaling", help="measure the CT and PET simulators' noise against dose, pixel "
                                              "size, body size and counts (about a minute)")
    args = parser.parse_args(argv)
    try:
        if args.command == "noise-scaling":
            from benchmark.data import noise_scaling
            print(noise_scaling.table())
            return 0
        if args.command == "complexity":
            from benchmark.data import complexity
            print(complexity.report(complexity.split_scores(args.source, args.size)))
            return 0
        if args.command == "score-inputs":
            print(_score_inputs(args.source, args.split, args.size))
            return 0
        if args.command == "prepare":
            print(_summary(_prepare(args)))
            return 0
        manifest = prepared.read_manifest(args.folder)
        print(json.dumps(manifest, indent=2) if args.json else _summary(manifest))
        if args.verify:
            bad = prepared.verify(args.folder)
            print("checksums: " + ("all match" if not bad else f"MISMATCH in {', '.join(bad)}"))
            return 1 if bad else 0
        return 0
    except (DataError, OSError) as err:           # OSError: e.g. the disk filled up while writing
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
