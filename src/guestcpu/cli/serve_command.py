"""``guestcpu serve``: the fleet's functions over HTTP (see guestcpu.service)."""

from __future__ import annotations

import click

DEFAULT_PORT = 8470


@click.command("serve")
@click.option("--host", "host", default="127.0.0.1", show_default=True, metavar="ADDRESS",
              help="Address to listen on (loopback by default; anything else needs a token).")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--db", "db", metavar="URL", envvar="GUESTCPU_DB",
              help="Inventory database: sqlite:///PATH or postgresql://... (default: $GUESTCPU_DB, else a "
              "SQLite file in the user's data directory).")
@click.option("--token-file", "token_file", metavar="FILE",
              help="File holding the token clients must send ('Authorization: Bearer TOKEN'); "
              "default: $GUESTCPU_TOKEN.")
@click.option("--insecure-no-auth", is_flag=True,
              help="Accept calls without a token (refused unless --host is a loopback address).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="info", show_default=True)
@click.pass_context
def serve_cmd(ctx: click.Context, host: str, port: int, db: str | None, token_file: str | None, insecure_no_auth: bool,
              log_level: str) -> None:
    """Serve the fleet's answers over HTTP: OpenAPI at /openapi.json, JSON bodies equal to --json."""
    import uvicorn

    from guestcpu.cli.common import load_catalog_for
    from guestcpu.fleet.store import open_store
    from guestcpu.service.app import ServiceSettings, create_app
    from guestcpu.service.auth import check_listen, read_token

    token = read_token(token_file)
    check_listen(host, token, insecure_no_auth)
    open_store(db).close()  # an unreachable or outdated database is refused now, not at the first call
    app = create_app(ServiceSettings(db=db, token=token, catalog=load_catalog_for(ctx)))
    shown = f"[{host}]" if ":" in host else host
    auth = "token required" if token else "NO AUTHENTICATION (loopback only)"
    click.echo(f"guestcpu serve: http://{shown}:{port}/ ({auth}); the API is described at /openapi.json", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug",
                server_header=False)
