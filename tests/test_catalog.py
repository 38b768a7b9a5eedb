"""The catalog is complete, consistent with the README, and names only files that exist."""

import re

from ref import catalog


def test_every_seed_paper_once():
    assert len(catalog.PAPERS) == 70
    for field in ("key", "title", "arxiv"):
        values = [getattr(p, field) for p in catalog.PAPERS]
        assert len(set(values)) == 70, f"duplicate {field}"


def test_rows_are_well_formed():
    for p in catalog.PAPERS:
        assert re.fullmatch(r"[a-z0-9_]+", p.key), p.key
        assert re.fullmatch(r"\d{4}\.\d{4,5}", p.arxiv), f"{p.key}: arXiv id {p.arxiv!r}"
        # the id's YYMM is the month of announcement; a paper submitted on the last days of December
        # (Titans: 31 Dec 2024, 2501.00663) is announced in January
        yy, mm = int(p.arxiv[:2]), int(p.arxiv[2:4])
        announced = 2000 + yy
        ok_year = p.year == announced or (mm == 1 and p.year == announced - 1)
        assert 1 <= mm <= 12 and ok_year, f"{p.key}: arXiv id {p.arxiv} does not match year {p.year}"
        assert p.kind in ("paper", "survey")
        assert all(n in (3, 4, 5, 6) for n in p.issues), p.key


def test_named_files_exist():
    assert catalog.missing_paths() == []


def test_status_is_derived_from_what_exists():
    p = catalog.PAPERS[0]
    assert catalog.Paper(p.key, p.title, p.arxiv, p.year, p.group).status == "planned"
    partial = catalog.Paper(p.key, p.title, p.arxiv, p.year, p.group, module="ref/catalog.py")
    assert partial.status == "partial"


def test_readme_table_is_generated_from_the_catalog():
    readme = (catalog.ROOT / "README.md").read_text(encoding="utf-8")
    assert catalog.readme_with_table(readme) == readme, (
        "README.md's paper table drifted from ref/catalog.py: run `python -m ref papers --update-readme`"
    )


def test_missing_paths_reports_a_dangling_row(tmp_path, monkeypatch):
    p = catalog.PAPERS[0]
    row = catalog.Paper(p.key, p.title, p.arxiv, p.year, p.group, lesson="lessons/99_nope.py")
    monkeypatch.setattr(catalog, "PAPERS", (row,))
    assert catalog.missing_paths() == [f"{p.key}: lesson lessons/99_nope.py does not exist"]
