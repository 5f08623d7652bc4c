"""Pins share their documents: a guest's row keeps its name and UUID, the rest is one shared body.

A fleet's guests are pinned to a few distinct CPUs; with a body per distinct pin a
load checks each body's fingerprint and seal once, not once per guest.

Revision ID: 0003_pin_bodies
Revises: 0002_pin_host_index
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0003_pin_bodies"
down_revision = "0002_pin_host_index"
branch_labels = None
depends_on = None

#: the members of a pin document that belong to the guest, not to its CPU
OWN_KEYS = ("name", "uuid")


def _digest(body: dict[str, Any]) -> str:
    # the same canonical form as the fleet code's document_digest (a migration must not import it)
    return "sha256:" + hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def upgrade() -> None:
    op.create_table(
        "pin_bodies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("digest", sa.String(80), nullable=False, unique=True),
        sa.Column("document", sa.JSON, nullable=False),
    )
    with op.batch_alter_table("pins") as batch:
        batch.add_column(sa.Column("body_id", sa.Integer, nullable=True))
        batch.add_column(sa.Column("guest_name", sa.Text, nullable=True))
        batch.add_column(sa.Column("guest_uuid", sa.String(64), nullable=True))
    connection = op.get_bind()
    pins = sa.table("pins", sa.column("id", sa.Integer), sa.column("document", sa.JSON),
                    sa.column("body_id", sa.Integer), sa.column("guest_name", sa.String),
                    sa.column("guest_uuid", sa.String))
    bodies = sa.table("pin_bodies", sa.column("id", sa.Integer), sa.column("digest", sa.String),
                      sa.column("document", sa.JSON))
    known: dict[str, int] = {}
    for pin_id, document in connection.execute(sa.select(pins.c.id, pins.c.document)).all():
        body = {k: v for k, v in document.items() if k not in OWN_KEYS}
        digest = _digest(body)
        if digest not in known:
            known[digest] = connection.execute(
                bodies.insert().values(digest=digest, document=body).returning(bodies.c.id)).scalar_one()
        connection.execute(pins.update().where(pins.c.id == pin_id).values(
            body_id=known[digest], guest_name=document.get("name"), guest_uuid=document.get("uuid")))
    with op.batch_alter_table("pins") as batch:
        batch.alter_column("body_id", existing_type=sa.Integer, nullable=False)
        batch.create_foreign_key("fk_pin_body", "pin_bodies", ["body_id"], ["id"])
        batch.create_index("ix_pins_body_id", ["body_id"])
        batch.drop_column("document")


def downgrade() -> None:
    with op.batch_alter_table("pins") as batch:
        batch.add_column(sa.Column("document", sa.JSON, nullable=True))
    connection = op.get_bind()
    rows = connection.execute(sa.text(
        "SELECT pins.id, pin_bodies.document, pins.guest_name, pins.guest_uuid FROM pins "
        "JOIN pin_bodies ON pins.body_id = pin_bodies.id")).all()
    pins = sa.table("pins", sa.column("id", sa.Integer), sa.column("document", sa.JSON))
    for pin_id, body, name, uuid in rows:
        document = dict(body if isinstance(body, dict) else orjson.loads(body))
        document.update({k: v for k, v in (("name", name), ("uuid", uuid)) if v is not None})
        connection.execute(pins.update().where(pins.c.id == pin_id).values(document=document))
    with op.batch_alter_table("pins") as batch:
        batch.alter_column("document", existing_type=sa.JSON, nullable=False)
        batch.drop_index("ix_pins_body_id")
        batch.drop_constraint("fk_pin_body", type_="foreignkey")
        batch.drop_column("guest_uuid")
        batch.drop_column("guest_name")
        batch.drop_column("body_id")
    op.drop_table("pin_bodies")
