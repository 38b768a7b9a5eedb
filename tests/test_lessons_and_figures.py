"""Every lesson runs in quick mode (under a minute), writes its figure and numbers, and the
gallery states its claim next to what was measured."""

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from ref import figures, lessons
from tests import background

LESSONS = lessons.discover()
QUICK_LIMIT_S = 60
QUICK_TEST = "test_lesson_runs_in_quick_mode"
# Each lesson runs in a process of its own, started when collection ends, beside the in-process
# tests (tests/background.py): its time is measured while another process competes with it for
# CI's two cores, a stricter test of the limit, not a looser one.


def quick_run(lesson):
    """(returncode, seconds, output, out_dir) of one lesson in quick mode, in a fresh directory."""
    out = Path(tempfile.mkdtemp(prefix=f"ref-quick-{lesson.name}-"))
    argv, env = lessons.command(lesson, quick=True, out_dir=out)
    start = time.perf_counter()
    proc = background.run(argv, timeout=600, cwd=lessons.ROOT, env=env)
    return proc.returncode, time.perf_counter() - start, proc.stdout + proc.stderr, out


def background_jobs(items):
    selected = {item.callspec.id for item in items if item.originalname == QUICK_TEST}
    return {f"lesson:{l.name}": (lambda l=l: quick_run(l)) for l in LESSONS if l.name in selected}


@pytest.mark.parametrize("lesson", LESSONS, ids=[l.name for l in LESSONS])
def test_lesson_runs_in_quick_mode(lesson):
    rc, seconds, output, out = background.result(f"lesson:{lesson.name}", lambda: quick_run(lesson))
    try:
        assert rc == 0, output[-5000:]
        assert seconds < QUICK_LIMIT_S, f"{lesson.name} took {seconds:.0f} s in quick mode (limit {QUICK_LIMIT_S} s)"
        result = json.loads((out / f"{lesson.name}.json").read_text())
        assert result["mode"] == "quick" and result["reproduced"] in lessons.REPRODUCED
        for fig in result["figures"]:
            assert (out / fig).stat().st_size > 10_000, f"{fig} missing or empty"
        page = figures.build_gallery(out, quick=True).read_text()
        assert result["claim"] in page and result["measured"] in page
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_lesson_names_and_structure():
    assert LESSONS, "no lessons found"
    for lesson in LESSONS:
        text = lesson.path.read_text(encoding="utf-8")
        assert "format_name: percent" in text, f"{lesson.name}: not a jupytext percent script"
        for part in ("## Summary", "## Exercises", "## Solutions"):
            assert part in text, f"{lesson.name}: missing '{part}'"
        assert "lesson_context(__file__)" in text and "save_result(" in text


def test_committed_gallery_matches_committed_results():
    """figures/README.md is generated from the committed full-mode results."""
    committed = (lessons.FIGURES_DIR / "README.md").read_text(encoding="utf-8")
    assert committed == figures.gallery_markdown(figures.load_results(lessons.FIGURES_DIR), quick=False)
    for lesson in LESSONS:
        result = json.loads((lessons.FIGURES_DIR / f"{lesson.name}.json").read_text())
        assert result["mode"] == "full", f"{lesson.name}: the committed figure must come from full mode"


def test_find_accepts_number_slug_or_name():
    first = LESSONS[0]
    for name in (first.number, first.slug, first.name):
        assert lessons.find(name) == first
    with pytest.raises(ValueError, match="lesson: expected one of"):
        lessons.find("99")


def test_save_result_validates(tmp_path):
    ctx = lessons.LessonContext(name="99_x", quick=True, out_dir=tmp_path)
    with pytest.raises(ValueError, match="reproduced: expected one of yes, partly, no, n/a, got 'maybe'"):
        ctx.save_result(title="t", claim="c", measured="m", reproduced="maybe", numbers={})
    with pytest.raises(ValueError, match="paper: expected a catalog key, got 'nope'"):
        ctx.save_result(title="t", claim="c", measured="m", reproduced="yes", numbers={}, paper="nope")
