"""The real servers the tests start for themselves: a private PostgreSQL and a headless Chromium."""

from __future__ import annotations

import stat
from pathlib import Path

import sqlalchemy

from browser_support import Chromium, png_size
from pg_support import PostgresServer


def test_postgres_accepts_a_query_on_its_private_socket(pg_url: str, postgres_server: PostgresServer) -> None:
    assert pg_url.startswith("postgresql+psycopg://") and f"host={postgres_server.socket_dir}" in pg_url
    engine = sqlalchemy.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("CREATE TABLE t (name text PRIMARY KEY, n integer)"))
            conn.execute(sqlalchemy.text("INSERT INTO t VALUES ('a', 1), ('b', 41)"))
            total = conn.execute(sqlalchemy.text("SELECT sum(n) FROM t")).scalar_one()
            version = conn.execute(sqlalchemy.text("SHOW server_version")).scalar_one()
            listen = conn.execute(sqlalchemy.text("SHOW listen_addresses")).scalar_one()
    finally:
        engine.dispose()
    assert total == 42
    assert int(version.split(".")[0]) >= 12
    assert listen == ""  # no TCP port: the unix socket is the only way in
    socket_dir_mode = postgres_server.socket_dir.stat().st_mode
    assert stat.S_IMODE(socket_dir_mode) == 0o700


def test_each_test_gets_its_own_empty_database(postgres_server: PostgresServer) -> None:
    first, second = postgres_server.new_database(), postgres_server.new_database()
    assert first != second
    engine = sqlalchemy.create_engine(second)
    try:
        with engine.connect() as conn:
            tables = conn.execute(sqlalchemy.text(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")).scalar_one()
    finally:
        engine.dispose()
    assert tables == 0


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>probe</title>
<style>body{margin:0;background:#fff} td.ok{background:#2a2;width:40px;height:40px}</style></head>
<body><table id="grid"><tr><td class="ok">1</td><td class="ok">2</td></tr></table>
<script>document.getElementById('grid').dataset.rendered = 'yes';</script></body></html>"""


def test_chromium_dumps_the_dom_after_scripts_ran(chromium: Chromium, tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text(PAGE)
    dom = chromium.dump_dom(page)
    assert '<table id="grid" data-rendered="yes">' in dom
    assert dom.count('<td class="ok">') == 2


def test_chromium_screenshot_is_a_png_of_the_window_size(chromium: Chromium, tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text(PAGE)
    png = chromium.screenshot(page, tmp_path / "shot.png", width=640, height=360)
    assert len(png) > 200
    assert png_size(png) == (640, 360)
