"""``guestcpu fleet report -o report.html`` from a real inventory, looked at in a real headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lxml.html
import pytest
from click.testing import CliRunner

from browser_support import Chromium, colour_count, png_size
from guestcpu.catalog.catalog import Catalog
from guestcpu.cli.main import cli
from guestcpu.fleet import api
from service_support import fill

GREEN = (0x2E, 0x7D, 0x32)


@pytest.fixture(scope="module")
def db_url(catalog: Catalog, tmp_path_factory: pytest.TempPathFactory) -> str:
    workdir = tmp_path_factory.mktemp("fleet-report")
    url = f"sqlite:///{workdir / 'fleet.db'}"
    fill(url, catalog, workdir)
    return url


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def report(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("out") / "report.html"
    result = run("fleet", "report", "-o", str(out), "--cluster", "prod", "--db", db_url, "--json")
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def expected(db_url: str, catalog: Catalog) -> dict[tuple[str, str], tuple[str, int]]:
    """(host, model) -> (class, blockers) straight from each host's stored QEMU offer."""
    store = api.open_store(db_url)
    try:
        view = api.load_view(store)
    finally:
        store.close()
    cells = {}
    for host in view.hosts:
        caps = view.caps(host, "kvm")
        assert caps is not None
        for model in caps.models:
            if model.alias_of is None:
                cells[host.name, model.name] = ("usable", 0) if model.usable else ("blocked", len(model.blockers))
    return cells


def test_summary_and_file(report: tuple[Path, dict[str, Any]], db_url: str, catalog: Catalog) -> None:
    out, summary = report
    store = api.open_store(db_url)
    try:
        baseline = api.baseline(store, catalog, cluster="prod")
    finally:
        store.close()
    assert summary["output"] == str(out) and summary["hosts"] == 3
    assert summary["cells"] == summary["hosts"] * summary["models"] == len(expected(db_url, catalog))
    assert summary["baseline"] == baseline.model and summary["stranded"] == 1 and summary["guests"] == 2
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temporary file left behind


def test_chromium_dom_matches_the_inventory(report: tuple[Path, dict[str, Any]], chromium: Chromium,
                                            db_url: str, catalog: Catalog) -> None:
    out, summary = report
    tree = lxml.html.fromstring(chromium.dump_dom(out))
    hosts = [th.text_content() for th in tree.xpath("//table[@id='heatmap']/thead//th[@class='host']")]
    assert hosts == ["core-i7-8700", "xeon-e5-2650-v3", "xeon-gold-6148"]
    rows = tree.xpath("//table[@id='heatmap']/tbody/tr")
    got = {}
    for row in rows:
        model = row.xpath("string(th)")
        for host, td in zip(hosts, row.xpath("td"), strict=True):
            kind = td.get("class").split()[1]
            got[host, model] = (kind, int(td.get("data-blockers", "0")))
    assert len(got) == summary["cells"]
    assert got == expected(db_url, catalog)
    assert tree.xpath("string(//*[@id='baseline-model'])") == summary["baseline"]
    limiting = tree.xpath("string(//*[@id='limiting-hosts'])")
    assert limiting and all(h in hosts for h in limiting.split(", "))
    stranded = tree.xpath("//section[@id='stranded']//tbody/tr")
    assert [tr.xpath("string(td[1])") for tr in stranded] == ["db-1"]
    assert "no other host can take it" in stranded[0].xpath("string(td[3])")


def test_chromium_screenshot(report: tuple[Path, dict[str, Any]], chromium: Chromium, tmp_path: Path) -> None:
    out, _summary = report
    png = chromium.screenshot(out, tmp_path / "report.png", width=1200, height=1600)
    assert png_size(png) == (1200, 1600)
    assert colour_count(png, GREEN) > 1000  # the usable cells are painted


def failing(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run through the CLI's own error handling; the one line it prints (the exit status must be 1)."""
    from guestcpu.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(list(args))
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_bad_output_or_cluster_writes_nothing(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no" / "such" / "dir.html"
    assert "does not exist" in failing(capsys, "fleet", "report", "-o", str(missing), "--db", db_url)
    assert "is a directory" in failing(capsys, "fleet", "report", "-o", str(tmp_path), "--db", db_url)
    assert "unknown cluster 'prd'; did you mean 'prod'" in failing(
        capsys, "fleet", "report", "-o", str(tmp_path / "r.html"), "--cluster", "prd", "--db", db_url)
    assert list(tmp_path.iterdir()) == []


def test_report_to_stdout(db_url: str) -> None:
    result = run("fleet", "report", "-o", "-", "--db", db_url)
    assert result.exit_code == 0
    assert result.stdout.startswith("<!DOCTYPE html>") and result.stdout.rstrip().endswith("</html>")


def test_large_fleets_share_columns_by_offer(catalog: Catalog, tmp_path: Path, chromium: Chromium) -> None:
    """Beyond MAX_HOST_COLUMNS hosts, hosts with the same offer share a column: the page stays small."""
    from fleet_support import write_captures
    from guestcpu.fleet.placement import where
    from guestcpu.fleet.report import render_report, report_data

    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    fill(url, catalog, tmp_path)
    more = tmp_path / "more"
    more.mkdir()
    (gold,) = write_captures(catalog, more, ("Xeon-Gold-6148",))
    store = api.open_store(url)
    try:
        api.add_hosts(store, [(str(gold), gold.read_bytes(), f"gold-{i}") for i in range(4)], catalog, cluster="prod")
        view = api.load_view(store)
        baseline = api.baseline(store, catalog)
    finally:
        store.close()
    data = report_data(view, baseline, where(view, list(view.pins)), accel="kvm", max_columns=3)
    assert data.host_count == 7 and len(data.hosts) == 3
    gold_column = next(h for h in data.hosts if h.also)
    assert sorted((gold_column.name, *gold_column.also)) == ["gold-0", "gold-1", "gold-2", "gold-3", "xeon-gold-6148"]
    page = tmp_path / "report.html"
    page.write_text(render_report(data))
    tree = lxml.html.fromstring(chromium.dump_dom(page))
    headers = tree.xpath("//table[@id='heatmap']/thead//th[@class='host']")
    assert sum(int(th.get("data-hosts", "1")) for th in headers) == 7
    assert len(tree.xpath("//table[@id='heatmap']/tbody/tr/td")) == 3 * len(data.models)
    usable, blocked = data.pairs()
    assert usable + blocked == sum(1 + len(h.also) for h in data.hosts for m in data.models
                                   if (h.name, m) in data.blockers)
