"""Lessons: discovery, running, and the small API a lesson uses to save its figure and numbers.

A lesson is ``lessons/NN_slug.py``, a jupytext percent script that imports ``ref`` and never
copies it. It runs as a plain script; ``python -m ref lessons run SLUG [--quick]`` runs it in a
fresh process with

* ``REF_QUICK=1`` in quick mode (small sizes: under a minute, what CI runs), and
* ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS`` = 1 unless set (small
  matrices: BLAS threads only contend), and
* ``REF_FIGURES_DIR``: where it writes ``<NN_slug>.png`` and ``<NN_slug>.json`` (default:
  ``figures/`` in full mode, ``figures/quick/`` in quick mode, so a quick run never overwrites
  the committed full-mode figures).

Inside a lesson::

    ctx = lesson_context(__file__)
    n_steps = 200 if ctx.quick else 5000
    ...
    ctx.save_figure(fig)
    ctx.save_result(claim="...", measured="...", reproduced="yes", numbers={...})
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ref.catalog import ROOT
from ref.io import write_json

LESSONS_DIR = ROOT / "lessons"
FIGURES_DIR = ROOT / "figures"
QUICK_DIR = FIGURES_DIR / "quick"
REPRODUCED = ("yes", "partly", "no", "n/a")

_NAME = re.compile(r"^(\d\d)_([a-z0-9_]+)\.py$")


@dataclass(frozen=True)
class Lesson:
    number: str  # "01"
    slug: str  # "linear_scan"
    path: Path

    @property
    def name(self) -> str:  # "01_linear_scan"
        return f"{self.number}_{self.slug}"

    @property
    def title(self) -> str:
        """The lesson's first markdown heading."""
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if line.startswith("# # "):
                return line[4:].strip()
        return self.name


def discover(directory: Path = LESSONS_DIR) -> list[Lesson]:
    if not directory.is_dir():
        raise ValueError(f"lessons: expected the folder {directory} (run from a checkout of the repository)")
    found = []
    for p in sorted(directory.glob("*.py")):
        m = _NAME.match(p.name)
        if m:
            found.append(Lesson(m.group(1), m.group(2), p))
    return found


def find(name: str, directory: Path = LESSONS_DIR) -> Lesson:
    """A lesson by number ("01"), slug ("linear_scan") or both ("01_linear_scan")."""
    lessons = discover(directory)
    for lesson in lessons:
        if name in (lesson.number, lesson.slug, lesson.name, lesson.path.name):
            return lesson
    raise ValueError(f"lesson: expected one of {', '.join(l.name for l in lessons)}, got {name!r}")


def default_out_dir(quick: bool) -> Path:
    return QUICK_DIR if quick else FIGURES_DIR


def command(lesson: Lesson, quick: bool, out_dir: Path | None = None) -> tuple[list[str], dict]:
    """The command line and environment that run a lesson in a fresh Python process (from ROOT)."""
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(quick)
    env = dict(os.environ, REF_FIGURES_DIR=str(out_dir), MPLBACKEND="Agg")
    env["REF_QUICK"] = "1" if quick else "0"
    # the lessons' matrices are small: BLAS threads only contend (with each other and with numba's
    # pool), and on a busy 2-core machine they made a training step 16x slower
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    return [sys.executable, str(lesson.path)], env


def run(lesson: Lesson, quick: bool, out_dir: Path | None = None, capture: bool = False):
    """Run a lesson in a fresh Python process. Returns (returncode, seconds, output or None)."""
    argv, env = command(lesson, quick, out_dir)
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=capture, text=True)
    output = (proc.stdout + proc.stderr) if capture else None
    return proc.returncode, time.perf_counter() - start, output


# --- what a lesson uses ------------------------------------------------------------------------


@dataclass
class LessonContext:
    name: str  # "01_linear_scan"
    quick: bool
    out_dir: Path

    def save_figure(self, fig, suffix: str = "") -> Path:
        """Save a matplotlib figure as ``<out_dir>/<name><suffix>.png`` (atomically)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"{self.name}{suffix}.png"
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
        return path

    def save_result(
        self,
        *,
        title: str,
        claim: str,
        measured: str,
        reproduced: str,
        numbers: dict,
        paper: str | None = None,
        figures: tuple[str, ...] | None = None,
    ) -> Path:
        """Write ``<out_dir>/<name>.json``: what the gallery shows next to the figure.

        ``claim`` is what the paper (or the lesson) asserts; ``measured`` what this run found, in
        numbers; ``reproduced`` one of "yes", "partly", "no", "n/a"; ``paper`` a catalog key.
        """
        if reproduced not in REPRODUCED:
            raise ValueError(f"reproduced: expected one of {', '.join(REPRODUCED)}, got {reproduced!r}")
        if paper is not None:
            from ref.catalog import BY_KEY

            if paper not in BY_KEY:
                raise ValueError(f"paper: expected a catalog key, got {paper!r}")
        result = dict(
            lesson=self.name,
            title=title,
            paper=paper,
            claim=claim,
            measured=measured,
            reproduced=reproduced,
            figures=list(figures or (f"{self.name}.png",)),
            mode="quick" if self.quick else "full",
            numbers=numbers,
        )
        return write_json(self.out_dir / f"{self.name}.json", result)


def lesson_context(file: str) -> LessonContext:
    """The context of the running lesson: its name, quick mode and output folder (from the env)."""
    name = Path(file).stem
    quick = os.environ.get("REF_QUICK", "0") == "1"
    out = os.environ.get("REF_FIGURES_DIR")
    return LessonContext(name=name, quick=quick, out_dir=Path(out) if out else default_out_dir(quick))
