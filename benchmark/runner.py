"""The one bench runner: the skeleton every bench shares.

A bench (a :class:`Bench` subclass) supplies only its config, its jobs (one per model and
seed, or per test setting), how to run one job, and its report. The runner owns the rest:

1. prepare the output folder (a folder holding another config is refused unless
   ``--overwrite``; one whose config differs only by its models grows by the new ones; its
   training path is kept where another machine's default differs);
2. skip the jobs whose rows ``results.csv`` already holds; when none is left, touch
   nothing, so the provenance of results this invocation did not produce is never
   rewritten;
3. write ``config.json`` (the config, the machine, this session), run the jobs, appending
   each job's rows as it finishes (a row in results.csv means that job is done: a killed
   bench loses at most the job in flight, whose training resumes from its checkpoint);
4. write the report (``table.md``, plots: from the CSV files alone) and close the session
   in ``config.json``.

A time budget (``max_minutes``), SIGTERM or Ctrl-C stops training at a step boundary,
checkpointed, and the report of what is done is written; rerunning the same command
continues where it stopped.
"""

from __future__ import annotations

import json
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch

from benchmark.config import from_dict, to_dict
from benchmark.report import (
    CONFIG_FILE,
    TABLE_FILE,
    append_results,
    normalize_config,
    prepare_out_dir,
    read_results,
    set_plot_style,
    write_config,
)
from datasets.files import atomic_write_text, remove_stale_temporaries
from draw.interrupt import Interrupted

RUN_FILE = "run.json"


@dataclass(frozen=True)
class Job:
    """One unit of a bench's work: a model and seed to train and test, or a test setting."""

    model: str = ""
    seed: int | None = None
    setting: str = ""

    def __str__(self) -> str:
        parts = [p for p in (self.model, "" if self.seed is None else f"seed {self.seed}", self.setting) if p]
        return " ".join(parts)


def weights_path(out: Path, model: str, seed: int) -> Path:
    """A bench folder's trained model, as shipped: ``OUT/weights/<model>-seed<k>.safetensors``
    (outside ``runs/``, so it can be committed with the results)."""
    return Path(out) / "weights" / f"{model}-seed{seed}.safetensors"


@dataclass
class RunContext:
    """What a bench's jobs need besides the config."""

    out: Path
    device: torch.device
    data_dir: Path | None = None
    echo: Callable[[str], None] = print
    progress: bool = True
    overwrite: bool = False
    deadline: float | None = None  # time.monotonic() after which training stops (resumable)

    def run_dir(self, job: Job) -> Path:
        """The checkpoint folder of a training job, ``OUT/runs/<model>-seed<k>``."""
        return self.out / "runs" / f"{job.model}-seed{job.seed}"

    def weights_path(self, job: Job) -> Path:
        """Where a training job's model is shipped (:func:`weights_path`)."""
        return weights_path(self.out, job.model, job.seed)

    def claim_run_dir(self, run_dir: Path, identity: dict[str, Any],
                      complete: Callable[[dict], dict] | None = None) -> None:
        """Make ``run_dir`` hold a run of ``identity`` (everything that decides the trained
        weights: model, training settings, data, speed path). A folder of another identity
        is removed with ``--overwrite`` (its checkpoints must not be resumed) and refused
        without it. ``complete`` maps a stored identity to how the code reads it today
        (settings added since it was written, at their defaults)."""
        path = run_dir / RUN_FILE
        identity = _normal(identity)
        # a run killed while writing run.json (or a checkpoint) leaves a half-written temporary
        # beside it: not a file of any run, so it neither blocks nor decides the claim
        remove_stale_temporaries(run_dir)
        if path.exists():
            try:
                stored = json.loads(path.read_text())
                if complete is not None:
                    stored = _normal(complete(stored))
            except (OSError, ValueError, TypeError, KeyError):
                stored = None
            if stored == identity:
                return
            if not self.overwrite:
                raise BenchError(f"{run_dir} holds a run of other settings; pass --overwrite to retrain it, "
                                 "or choose another --out")
            self.echo(f"--overwrite: removing {run_dir} (trained with other settings)")
            shutil.rmtree(run_dir)
        elif run_dir.exists() and any(run_dir.iterdir()):
            if not self.overwrite:
                raise BenchError(f"{run_dir} holds files of an unknown run; pass --overwrite or choose another --out")
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(identity, indent=2) + "\n")


def _normal(identity: Any) -> Any:
    return json.loads(json.dumps(identity, default=str))


class BenchError(ValueError):
    """A bench cannot run as asked; the message says why and what to do."""


class OutOfTime(Exception):
    """The time budget ran out; what was trained is checkpointed (rerun to continue)."""


class Bench(ABC):
    """A benchmark: its config (a dataclass, ``config_class``), its jobs and its report."""

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    @classmethod
    def from_folder(cls, out: str | Path) -> Bench:
        """The bench of a finished (or started) output folder, from its config.json."""
        return cls(from_dict(cls.config_class, _stored_config(Path(out)), f"{out}/config.json"))

    def jobs(self) -> list[Job]:
        """Every job of this config, in order: by default one per seed and model (``cfg.seeds``,
        ``cfg.models``), the seeds outermost."""
        return [Job(m, s) for s in self.cfg.seeds for m in self.cfg.models]

    def done_metric(self) -> str:
        """The metric whose row marks a (model, seed) job as done."""
        raise NotImplementedError

    def is_done(self, results: pd.DataFrame, job: Job) -> bool:
        rows = results[(results.model == job.model) & (results.metric == self.done_metric())]
        return bool((rows.seed == job.seed).any()) if job.seed is not None else not rows.empty

    def setup(self, ctx: RunContext, todo: list[Job]) -> None:  # noqa: B027 - optional hook
        """Load what every job needs (data, models); called once, only when a job is left."""

    @abstractmethod
    def run_job(self, ctx: RunContext, job: Job) -> list[dict]:
        """Run one job; return its results.csv rows (appended by the runner). Raise
        :class:`OutOfTime` when the time budget ran out first (the job resumes on the next
        invocation)."""

    def finish(self, ctx: RunContext) -> None:  # noqa: B027 - optional hook
        """After the jobs: figures that need the trained models."""

    def data_record(self) -> dict | None:
        """What data this run actually read, when the config alone does not say (e.g. which
        MNIST binarization the data folder gave); written to config.json as ``"data"``."""
        return None

    @classmethod
    @abstractmethod
    def table(cls, out: Path, df: pd.DataFrame, cfg: Any) -> str:
        """The text of ``table.md`` from ``results.csv`` (``df``) and the folder's other CSVs."""

    @classmethod
    def plots(cls, out: Path, df: pd.DataFrame, cfg: Any) -> list[Path]:
        """The plots, drawn from the folder's CSV files alone; returns their paths."""
        return []

    @classmethod
    def write_report(cls, out: str | Path, cfg: Any) -> list[Path]:
        """``table.md`` and the plots, from the folder's CSV files alone (``cli.py report``)."""
        out = Path(out)
        df = read_results(out)
        atomic_write_text(out / TABLE_FILE, cls.table(out, df, cfg))
        if df.empty:
            return [out / TABLE_FILE]
        set_plot_style()
        return [out / TABLE_FILE, *cls.plots(out, df, cfg)]


def _as_read_today(config_class: type, stored: Any) -> Any:
    """A stored config as this code reads it: the settings added since it was written at
    their defaults (which are the behaviour from before them), normalised like config.json.
    A config this code cannot read is returned as it is (the comparison then fails)."""
    try:
        return normalize_config(to_dict(from_dict(config_class, stored)))
    except (TypeError, ValueError):  # ConfigError is a ValueError
        return stored


def _stored_config(out: Path) -> dict:
    try:
        return json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BenchError(f"{out} has no readable config.json; is it a bench folder?") from e


def _joinable(old: dict, new: dict) -> bool:
    """Whether a folder of config ``old`` takes a run of config ``new`` (normalised configs):
    the same config, or the same but for models added, every model both name specified alike."""
    if old == new:
        return True
    if not (isinstance(old.get("models"), dict) and isinstance(new.get("models"), dict)):
        return False
    if {k: v for k, v in new.items() if k != "models"} != {k: v for k, v in old.items() if k != "models"}:
        return False
    return all(old["models"][m] == spec for m, spec in new["models"].items() if m in old["models"])


def _keep_training_path(bench: Bench, out: Path, old: dict, new: dict,
                        echo: Callable[[str], None]) -> tuple[Bench, dict]:
    """A folder's runs keep the training path (``speed``) they started on. The path is the
    machine's default unless ``--eager`` (bf16 products only where the CPU has bf16 matrix
    instructions), so the same command on another machine would otherwise refuse to
    continue a run, or to add a model to a folder, whose config differs by nothing else;
    bf16 changes the numbers, so one folder never mixes two paths. Returns the bench and
    its normalised config (unchanged where the folder would refuse the run anyway)."""
    if "speed" not in old or "speed" not in new or old["speed"] == new["speed"]:
        return bench, new
    if not _joinable(old, {**new, "speed": old["speed"]}):
        return bench, new  # another config in other respects too: refused as usual
    kept = type(bench)(from_dict(bench.config_class, {**to_dict(bench.cfg), "speed": old["speed"]},
                                 f"{out}/config.json"))
    echo(f"{out} was started on the training path {kept.cfg.speed.label()}; continuing on it, not on "
         f"{bench.cfg.speed.label()} (pass --overwrite or another --out to train on that instead)")
    return kept, normalize_config(to_dict(kept.cfg))


def _join_folder(bench: Bench, out: Path,
                 echo: Callable[[str], None]) -> tuple[Bench, set[str] | None, dict | None]:
    """Models added to a bench folder. When ``out`` holds this bench's config but for its
    models (a dict of model specs), and every model both configs name is specified alike,
    the folder's config grows by the new models (kept in its order, the new ones after) and
    only the models asked for are run: ``bench cluttered --models ram --out DIR`` adds RAM's
    rows to a finished Table 1 without retraining the rest, and a user's model joins the
    shipped ones in their tables. Either way the folder's training path is kept
    (:func:`_keep_training_path`). Returns the bench to run, the models asked for and the
    folder's stored config; the last two are None when the folder is not joined
    (:func:`prepare_out_dir` then checks the config as usual)."""
    new = normalize_config(to_dict(bench.cfg))
    try:
        old = _as_read_today(bench.config_class, _stored_config(out))
    except BenchError:
        return bench, None, None
    if not isinstance(old, dict):
        return bench, None, None
    bench, new = _keep_training_path(bench, out, old, new, echo)
    if old == new or not _joinable(old, new):
        return bench, None, None  # the same config, or one refused (or replaced with --overwrite)
    added = [m for m in new["models"] if m not in old["models"]]
    if added:
        echo(f"adding {', '.join(added)} to the models of {out} ({', '.join(old['models'])})")
    merged = {**old, "models": {**old["models"], **new["models"]}}
    return type(bench)(from_dict(bench.config_class, merged, f"{out}/config.json")), set(new["models"]), old


def run_bench(bench: Bench, out: str | Path, *, overwrite: bool = False, device: str | torch.device = "cpu",
              data_dir: str | Path | None = None, echo: Callable[[str], None] = print, progress: bool = True,
              max_minutes: float | None = None) -> bool:
    """Run ``bench`` into ``out`` (see the module docstring). Returns True when every job
    is done, False when the time budget stopped it first (rerun to continue)."""
    asked, stored = None, None
    if not overwrite:
        bench, asked, stored = _join_folder(bench, Path(out).expanduser(), echo)
    cfg = to_dict(bench.cfg)
    as_read_today = partial(_as_read_today, bench.config_class)
    out = prepare_out_dir(out, cfg if stored is None else stored, overwrite,  # config.json is written below
                          complete=as_read_today)
    ctx = RunContext(out=out, device=torch.device(device), data_dir=Path(data_dir) if data_dir else None, echo=echo,
                     progress=progress, overwrite=overwrite,
                     deadline=None if max_minutes is None else time.monotonic() + 60 * max_minutes)
    jobs = [j for j in bench.jobs() if asked is None or j.model in asked]
    results = read_results(out)
    todo = [j for j in jobs if not bench.is_done(results, j)]
    if not todo:
        echo(f"every job ({len(jobs)}) is already in {out / 'results.csv'}: nothing to do"
             + ("; config.json and the report are left as they are" if (out / TABLE_FILE).exists() else ""))
        if not (out / TABLE_FILE).exists():
            bench.write_report(out, bench.cfg)
        return True
    if len(todo) < len(jobs):
        echo(f"{len(jobs) - len(todo)} of {len(jobs)} jobs already in {out / 'results.csv'}: skipped")
    started = datetime.now(timezone.utc)
    write_config(out, cfg, started, as_read_today=as_read_today)
    complete, interrupted = True, None
    try:
        bench.setup(ctx, todo)
        for job in todo:
            append_results(out, bench.run_job(ctx, job))  # last: a row in results.csv means this job is done
    except OutOfTime:
        echo(f"the time budget of {max_minutes:g} min is used up; what was done is saved (checkpoints, finished "
             "chunks): rerun the same command to continue")
        complete = False
    except Interrupted as e:  # SIGTERM / Ctrl-C: the report of what is done, then stop
        echo(str(e))
        complete, interrupted = False, e
    if complete:
        bench.finish(ctx)
    for path in bench.write_report(out, bench.cfg):
        echo(f"wrote {path}")
    write_config(out, cfg, started, datetime.now(timezone.utc), complete=complete, data=bench.data_record(),
                 as_read_today=as_read_today)
    echo(f"wrote {out / 'results.csv'} and {out / CONFIG_FILE}" + ("" if complete else " (not finished yet)"))
    if interrupted is not None:
        raise interrupted
    return complete
