"""``headstart report``: a self-contained HTML page with every section, checked in Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from headstart.cli.main import main
from headstart.report import SECTIONS
from tests.browser import browser_page

CV = {
    "folds": 5,
    "repeats": 1,
    "images": 44,
    "strategies": {
        "probe": {
            "fold_acc": [0.9, 1.0, 0.8, 0.9, 1.0],
            "mean": 0.92,
            "std": 0.08,
            "ci95": [0.82, 1.0],
            "likely_label_errors": {
                "class": [
                    {
                        "path": "red/<b>9</b>.png",
                        "given": "red",
                        "predicted": "blue",
                        "probability": 0.97,
                        "given_probability": 0.03,
                        "confident": True,
                    }
                ]
            },
        },
    },
    "verdict": ["only one strategy"],
}


@pytest.fixture
def report(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """The tiny run's report, written by the CLI, with a cv.json beside the run."""
    (trained_run.parent / "cv.json").write_text(json.dumps(CV))
    assert main(["--no-progress", "report", str(trained_run)]) == 0
    assert "wrote" in capsys.readouterr().out
    return trained_run / "report.html"


def test_report_is_self_contained_and_has_every_section(report: Path) -> None:
    html = report.read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) == 5  # curves, confusion matrix, ROC, reliability diagram, top losses
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert "0.9200" in html and "only one strategy" in html  # the cv.json beside the run
    assert "likely label errors out of fold, probe: 1 images" in html
    assert "red/&lt;b&gt;9&lt;/b&gt;.png" in html and "blue (confident)" in html
    assert "95% CI" in html and "ROC AUC" in html and "positive class &#39;red&#39;" in html


def test_report_escapes_what_comes_from_data(trained_run: Path) -> None:
    from headstart.report import write_report

    write_report(trained_run, progress=False)  # evaluates the run first
    manifest = json.loads((trained_run / "manifest.json").read_text())
    manifest["weights"] = "<img src=x onerror=alert(1)>"
    (trained_run / "manifest.json").write_text(json.dumps(manifest))
    html = write_report(trained_run, progress=False).read_text()
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_report_renders_in_chromium_without_errors(report: Path) -> None:
    with browser_page() as b:
        b.page.goto(report.as_uri())
        for section in SECTIONS:
            heading = b.page.locator(f"section#{section} h2")
            assert heading.is_visible(), section
        broken = b.page.evaluate(
            "[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length"
        )
        images = b.page.evaluate("document.images.length")
        assert images == 5 and broken == 0
        summary = b.page.locator("section#summary").inner_text()
        assert "best validation accuracy" in summary and "95% CI" in summary
        assert b.errors == []
