"""The fleet report page: pure rendering, escaping, and what a real headless Chromium shows of it."""

from __future__ import annotations

import re
from pathlib import Path

import lxml.html
import pytest

from browser_support import Chromium, colour_count, png_size
from guestcpu.fleet.report import (
    ABSENT,
    BLOCKED,
    USABLE,
    LeftOut,
    ReportBaseline,
    ReportData,
    ReportHost,
    StrandedGuest,
    render_report,
)

HOSTILE = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>"\'&'
GREEN = (0x2E, 0x7D, 0x32)  # --ok
RED = (0xC6, 0x28, 0x28)  # --b3


def sample(hostile: str = HOSTILE) -> ReportData:
    hosts = (ReportHost("epyc-01", "prod", "kvm", "7.2.0"), ReportHost("xeon-02", "prod", "kvm", "10.0.0"),
             ReportHost(hostile, "prod", "tcg", "7.2.0", non_operational="cannot give the frozen CPU"))
    models = ("EPYC-v4", "Haswell-noTSX-v2", "Icelake-Server-v7", "qemu64-v1")
    blockers: dict[tuple[str, str], tuple[str, ...]] = {}
    for h in hosts:
        blockers[h.name, "qemu64-v1"] = ()
        blockers[h.name, "Haswell-noTSX-v2"] = ("pcid",) if h.name == hostile else ()
        blockers[h.name, "EPYC-v4"] = () if h.name == "epyc-01" else ("sha-ni", "clzero", "xsaveerptr")
    blockers["xeon-02", "Icelake-Server-v7"] = ("avx512f", "avx512bw", "pku", "la57", "gfni")
    blockers["epyc-01", "Icelake-Server-v7"] = ("avx512f",)
    # Icelake is not offered by the hostile host's QEMU: an "absent" cell.
    base = ReportBaseline("Haswell-noTSX-v2", ("aes", "xsave"),
                          (LeftOut("pcid", (hostile,)), LeftOut("sha-ni", ("xeon-02", hostile))),
                          (hostile, "xeon-02"), ("ssse3",), {"epyc-01": "verified", "xeon-02": "verified"})
    stranded = (StrandedGuest(f"guest-{hostile}", "epyc-01", "no other host can give clzero"),)
    return ReportData("guestcpu fleet report: prod", "2026-12-01T20:00:00Z", "kvm", hosts, models, blockers, base,
                      stranded=stranded, guests=3)


def expected_cells(data: ReportData) -> list[tuple[str, int]]:
    """(class, number of blockers) of every cell, row by row (models) then host by host."""
    return [
        (state, len(found)) for model in data.models for host in data.hosts
        for state, found in [data.cell(host.name, model)]
    ]


def test_cells_are_usable_blocked_or_absent() -> None:
    data = sample()
    assert data.cell("epyc-01", "EPYC-v4") == (USABLE, ())
    assert data.cell("xeon-02", "EPYC-v4") == (BLOCKED, ("sha-ni", "clzero", "xsaveerptr"))
    assert data.cell(HOSTILE, "Icelake-Server-v7") == (ABSENT, ())
    assert data.summary() == {"hosts": 3, "columns": 3, "models": 4, "cells": 12, "usable": 6, "blocked": 5,
                              "baseline": "Haswell-noTSX-v2", "baseline_error": "", "guests": 3, "stranded": 1}


def test_hostile_names_are_text_never_markup() -> None:
    page = render_report(sample())
    tree = lxml.html.fromstring(page)
    assert tree.xpath("//script") == [] and tree.xpath("//img") == []
    assert not any(el.get("onerror") for el in tree.iter() if isinstance(el.tag, str))
    host_headers = [th.text_content() for th in tree.xpath("//table[@id='heatmap']/thead//th[@class='host']")]
    assert host_headers == ["epyc-01", "xeon-02", HOSTILE]
    titles = [td.get("title") for td in tree.xpath("//td[contains(@class,'cell')]")]
    assert any(HOSTILE in (t or "") for t in titles)
    assert tree.xpath("string(//title)") == "guestcpu fleet report: prod"


def test_page_is_self_contained() -> None:
    page = render_report(sample())
    tree = lxml.html.fromstring(page)
    assert tree.xpath("//script|//link|//img|//iframe|//object|//embed") == []
    assert not re.search(r"https?://|url\(|@import", page)
    assert "default-src 'none'" in page


def test_no_baseline_says_why() -> None:
    data = sample()
    page = render_report(ReportData(data.title, data.generated_at, "kvm", data.hosts, data.models, data.blockers,
                                    None, baseline_error="hosts of different vendors share no model"))
    tree = lxml.html.fromstring(page)
    assert "hosts of different vendors share no model" in tree.xpath("string(//section[@id='baseline'])")
    assert "None: each of the 0 stored guests" in tree.xpath("string(//section[@id='stranded'])")


@pytest.fixture(scope="module")
def page_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render_report(sample()))
    return path


def test_chromium_dom_has_one_cell_per_host_and_model(chromium: Chromium, page_file: Path) -> None:
    data = sample()
    tree = lxml.html.fromstring(chromium.dump_dom(page_file))
    cells = tree.xpath("//table[@id='heatmap']/tbody/tr/td")
    assert len(cells) == len(data.hosts) * len(data.models) == 12
    got = [(next(c for c in (USABLE, BLOCKED, ABSENT) if c in td.get("class", "").split()),
            int(td.get("data-blockers", "0"))) for td in cells]
    assert got == expected_cells(data)
    severity = {td.get("data-blockers"): td.get("class").split()[-1] for td in cells if td.get("data-blockers")}
    assert severity == {"1": "few", "3": "some", "5": "many"}
    assert tree.xpath("string(//*[@id='baseline-model'])") == "Haswell-noTSX-v2"
    assert tree.xpath("string(//*[@id='limiting-hosts'])") == f"{HOSTILE}, xeon-02"
    rows = tree.xpath("//table[@id='left-out']//tbody/tr")
    left_out = [(tr.xpath("string(td[1])"), tr.xpath("string(td[2])")) for tr in rows]
    assert left_out == [(HOSTILE, "pcid"), (f"xeon-02, {HOSTILE}", "sha-ni")]
    # The hostile name stayed text: no script ran (the title is ours) and no element was injected.
    assert tree.xpath("string(//title)") == "guestcpu fleet report: prod"
    assert tree.xpath("//script|//img") == []
    assert [tr.xpath("string(td[1])") for tr in tree.xpath("//section[@id='stranded']//tbody/tr")] == \
        [f"guest-{HOSTILE}"]


def test_chromium_screenshot_shows_the_heatmap(chromium: Chromium, page_file: Path, tmp_path: Path) -> None:
    png = chromium.screenshot(page_file, tmp_path / "report.png", width=1280, height=1100)
    assert png_size(png) == (1280, 1100)
    # The usable (green) and many-blockers (red) cells are painted: the styles applied.
    assert colour_count(png, GREEN) > 500
    assert colour_count(png, RED) > 200
