"""Comparing runs honestly: the same protocol for every run, paired differences, errors over seeds.

A comparison is a set of *groups* (one per objective, or per prior × guide), each a list of runs
that differ only in the seed. Every run is a run folder of its own, written by
:func:`pyro_vae.experiment.run` as soon as it finishes (``metrics.json``, ``evaluation.pt`` with the
per-image results); so a comparison that crashes or is killed loses at most the run in progress,
and its summary can be rebuilt from the folders (:func:`run_or_reuse` with ``resume``).

Statistics (:func:`summarize`):

* each column is the mean over a group's seeds, ± the standard error over seeds; with one seed,
  the test ELBO and log-likelihood carry the standard error over test images instead;
* Δ log p(x) against the reference group is paired: per seed, the per-image difference of the two
  models' log-likelihoods on the same test images (:func:`pyro_vae.stats.paired_difference`); with
  one seed its error is over images, with several it is over seeds (training noise dominates);
* a statistic a run could not compute (PSIS k̂ below K = 100, the validation ELBO without a
  validation split) is ``None`` and shows as "n/a".
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .config import FIXED, OVERRIDE, RunConfig
from .errors import PyroVAEError, ResumeConflictError
from .outputs import RunDirectory
from .run_identity import check_folder
from .stats import mean_and_stderr, paired_difference

#: How the processes of ``jobs > 1`` start: ``spawn`` (fresh interpreters; safe with CUDA and threads).
START_METHOD = "spawn"
#: Settings a finished run must share with the configuration that would rerun it, to be reused.
_REUSE_FREE = ("eval_samples", "eval_ks")


@dataclasses.dataclass
class RunRecord:
    """A finished run: its folder, its ``metrics.json`` and its per-image ``evaluation.pt``."""

    folder: Path
    metrics: dict[str, Any]
    evaluation: dict[str, Any]

    @property
    def config(self) -> RunConfig:
        return RunConfig.from_dict(self.metrics["config"]["run"])


def finished(folder: str | Path) -> bool:
    """Whether ``folder`` holds a finished run (its metrics and per-image results)."""
    folder = Path(folder)
    return (folder / "metrics.json").is_file() and (folder / "evaluation.pt").is_file()


def load_run(folder: str | Path) -> RunRecord:
    """Read a finished run folder (the per-image results with the safe loader)."""
    folder = Path(folder)
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
        evaluation = torch.load(folder / "evaluation.pt", map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (unreadable, truncated, foreign: all mean "not a finished run")
        raise PyroVAEError(f"{folder} does not hold a readable finished run ({type(error).__name__}: "
                           f"{str(error).splitlines()[0][:160] if str(error) else ''}); remove it, or start the "
                           "comparison again with --overwrite") from None
    check_folder(folder, {folder / "metrics.json": metrics, folder / "evaluation.pt": evaluation},
                 files=("evaluation.pt", "metrics.json"))  # the numbers are of one run
    return RunRecord(folder, metrics, evaluation)


def run_or_reuse(config: RunConfig, resume: bool) -> RunRecord:
    """The record of the run ``config`` describes: with ``resume``, a finished run in its folder is
    reused (it must have been run with the same settings) and an unfinished one continues from its
    checkpoint; otherwise it is run afresh."""
    from .experiment import run

    folder = Path(config.out)
    if resume and finished(folder):
        record = load_run(folder)
        saved = record.config
        changed = config.differences(saved, (FIXED, OVERRIDE)) + [
            name for name in _REUSE_FREE if getattr(config, name) != getattr(saved, name)]
        if changed:
            raise ResumeConflictError(changed[0], f"{folder} holds a finished run with other settings ("
                                      + ", ".join(f"{n} {getattr(saved, n)!r} there, {getattr(config, n)!r} now"
                                                  for n in changed)
                                      + "); run the comparison with the same settings, or with --overwrite")
        print(f"{folder}: finished earlier, reused")
        return record
    if resume and (folder / "checkpoint.pt").is_file():
        config = config.replace(resume=str(folder))
    result = run(config)
    return RunRecord(Path(config.out), result.metrics, {
        "elbo": result.evaluation.elbo, "log_likelihood": result.evaluation.log_likelihood,
        "khat": result.evaluation.khat, "bounds": result.evaluation.bounds})


@dataclasses.dataclass
class Group:
    """Runs of one variant over seeds, with the variant's description (``info``, e.g. objective and K)."""

    label: str
    runs: list[RunRecord]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Variant:
    """One row of a comparison: its label and description, and the configuration of its run with a
    given seed."""

    label: str
    info: dict[str, Any]
    config: Callable[[int], RunConfig]


#: The file whose presence means a folder holds a comparison.
COMPARISON_MARKER = "results.json"


@dataclasses.dataclass(frozen=True)
class AISColumn:
    """AIS on the first ``images`` test images of every run (``steps`` × ``chains``), beside
    importance sampling on the same images: the columns ``ais_log_likelihood`` and
    ``is_subset_log_likelihood`` (± ``_stderr``)."""

    images: int
    steps: int = 500
    chains: int = 16


def add_ais(record: RunRecord, column: AISColumn, resume: bool) -> RunRecord:
    """Certify the run's first test images with AIS (:func:`pyro_vae.certify.certify`, kept in
    ``<run>/likelihood``; reused with ``resume``) and add its numbers to the record's metrics."""
    from .certify import CertifySettings, certify

    saved = record.folder / "likelihood" / "likelihood.json"
    settings = CertifySettings(images=column.images, is_samples=(record.metrics["eval_samples"],),
                               ais_steps=column.steps, ais_chains=column.chains)
    summary = json.loads(saved.read_text()) if resume and saved.is_file() else None
    if summary is None or summary["settings"] != dataclasses.asdict(settings):
        print(f"{record.folder}: AIS on the first {column.images} test images")
        summary = certify(record.folder, settings, overwrite=True, progress=False)
    reference = summary[f"is_{record.metrics['eval_samples']}"]
    record.metrics.update(ais_log_likelihood=summary["ais"]["mean"], ais_log_likelihood_stderr=summary["ais"]["stderr"],
                          is_subset_log_likelihood=reference["mean"], is_subset_log_likelihood_stderr=reference["stderr"],
                          ais_images=summary["test_images"])
    return record


def run_comparison(folder: str | Path, variants: Sequence[Variant], seeds: Sequence[int], *, resume: bool,
                   overwrite: bool, outputs: Sequence[str], after_each_run: Callable[[list[Group]], None],
                   ais: AISColumn | None = None, jobs: int = 1) -> list[Group]:
    """Run (or, with ``resume``, reuse) every variant with every seed, each run in its own folder,
    holding the comparison's folder (locked; a fresh comparison refuses one that holds a comparison
    unless ``overwrite``). ``after_each_run`` is called with the groups so far after every run, so
    the summary on disk is never older than the last finished run. With ``ais``, every run is also
    certified by AIS on a stated subset of test images (:class:`AISColumn`).

    ``jobs``: how many runs go at once, each in a process of its own (started with ``spawn``); runs
    on CUDA take the machine's GPUs in turn (run i on ``cuda:i mod count``). The summary holds, for
    each variant, its runs of the first seeds that have all finished (so that paired differences
    pair the same seeds); a run that fails does not stop the others, and the first failure is
    raised once every other run has finished (the finished ones are kept)."""
    claim = RunDirectory(folder, markers=(COMPARISON_MARKER,), outputs=outputs).claim(fresh=not resume,
                                                                                      overwrite=overwrite)
    tasks = [(v, seed) for v in range(len(variants)) for seed in seeds]
    records: dict[tuple[int, int], RunRecord] = {}

    def groups() -> list[Group]:
        done = []
        for v, variant in enumerate(variants):
            runs = list(itertools.takewhile(lambda run: run is not None, (records.get((v, seed)) for seed in seeds)))
            if runs:
                done.append(Group(variant.label, runs, variant.info))
        return done

    with claim:
        try:
            if jobs <= 1:
                for v, seed in tasks:
                    print(f"\n=== {variants[v].label}, seed {seed} ===")
                    records[v, seed] = _run_one(variants[v].config(seed), resume, ais)
                    after_each_run(groups())
            else:
                def summarize_so_far() -> None:
                    if groups():  # e.g. not while only later seeds have finished
                        after_each_run(groups())

                _run_in_parallel(variants, tasks, records, resume, ais, jobs, summarize_so_far)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(f"interrupted; the finished runs are kept in {folder}: continue the comparison "
                                    "with the same flags and --resume") from None
    return groups()


def _run_one(config: RunConfig, resume: bool, ais: AISColumn | None) -> RunRecord:
    record = run_or_reuse(config, resume)
    return add_ais(record, ais, resume) if ais is not None else record


def _job(config: RunConfig, resume: bool, ais: AISColumn | None) -> RunRecord | str:
    """One run in a worker process: its record, or its one-line error message (exceptions with
    their own constructor arguments do not always survive pickling)."""
    try:
        return _run_one(config, resume, ais)
    except PyroVAEError as error:
        from .cli import describe_error

        return describe_error(error)


def _run_in_parallel(variants, tasks, records, resume, ais, jobs, summarize_so_far) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    gpus = torch.cuda.device_count()
    configs = []
    for i, (v, seed) in enumerate(tasks):
        config = variants[v].config(seed).replace(progress=False)
        if torch.device(config.device).type == "cuda" and gpus:
            config = config.replace(device=f"cuda:{i % gpus}")
        elif config.threads is None:  # the machine's cores shared out between the jobs
            config = config.replace(threads=max(1, (os.cpu_count() or 1) // jobs))
        configs.append(config)
    failures = []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context(START_METHOD)) as pool:
        pending = {pool.submit(_job, config, resume, ais): task for task, config in zip(tasks, configs)}
        try:
            while pending:
                finished_now, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished_now:
                    v, seed = pending.pop(future)
                    outcome = future.result()
                    if isinstance(outcome, str):
                        print(f"=== {variants[v].label}, seed {seed}: failed: {outcome}")
                        failures.append(f"{variants[v].label}, seed {seed}: {outcome}")
                        continue
                    print(f"=== {variants[v].label}, seed {seed}: finished")
                    records[v, seed] = outcome
                    summarize_so_far()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    if failures:
        raise PyroVAEError(f"{len(failures)} of {len(tasks)} runs failed, the first {failures[0]}; the finished runs "
                           "are kept: fix it and continue with --resume")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def summarize(groups: Sequence[Group], columns: Sequence[str], reference: int = 0) -> list[dict[str, Any]]:
    """One row per group: for each metric in ``columns`` its mean over seeds (``key``) and standard
    error (``key + "_se"``), and the paired ``delta_log_likelihood`` (± ``_se``) against
    ``groups[reference]``, seed by seed."""
    rows = []
    ref = groups[reference]
    for group in groups:
        seeds = len(group.runs)
        row: dict[str, Any] = {"label": group.label, **group.info, "seeds": seeds}
        for key in columns:
            values = [_number(run.metrics.get(key)) for run in group.runs]
            if any(v is None for v in values):
                row[key], row[key + "_se"] = None, None
                continue
            row[key], row[key + "_se"] = mean_and_stderr(values)
            if seeds == 1:  # one seed: the error of the test-image sample where there is one
                row[key + "_se"] = _number(group.runs[0].metrics.get(key + "_stderr"))
        row["delta_log_likelihood"], row["delta_log_likelihood_se"] = _paired_delta(group, ref)
        rows.append(row)
    return rows


def _paired_delta(group: Group, ref: Group) -> tuple[float | None, float | None]:
    if len(group.runs) != len(ref.runs):
        return None, None
    try:
        per_seed = [paired_difference(run.evaluation["log_likelihood"], base.evaluation["log_likelihood"])
                    for run, base in zip(group.runs, ref.runs, strict=True)]
    except ValueError:  # not the same test images
        return None, None
    if len(per_seed) == 1:
        return per_seed[0]
    mean, stderr = mean_and_stderr([mean for mean, _ in per_seed])
    return mean, stderr


def format_value(value: float | None, stderr: float | None = None, digits: int = 2) -> str:
    """``value ± stderr`` to ``digits`` decimals; "n/a" for a missing value, the value alone for a
    missing error."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if stderr is None or not math.isfinite(stderr):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ± {stderr:.{digits}f}"


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, Any]]) -> str:
    """A Markdown table: ``columns`` are (header, key, format) where format is a number of decimals
    (the value ± its ``_se``), or a function of the row returning the cell."""
    lines = ["| " + " | ".join(header for header, _, _ in columns) + " |",
             "|" + "|".join(" --- " if fmt is None else " ---: " for _, _, fmt in columns) + "|"]
    for row in rows:
        cells = []
        for _, key, fmt in columns:
            if callable(fmt):
                cells.append(fmt(row))
            elif fmt is None:
                cells.append(str(row.get(key)))
            else:
                cells.append(format_value(row.get(key), row.get(key + "_se"), fmt))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
