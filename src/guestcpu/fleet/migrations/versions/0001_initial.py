"""The first fleet inventory: clusters, hosts, their states, capability profiles, pins.

Revision ID: 0001_initial
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "profiles",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("digest", sa.String(80), nullable=False, unique=True),
        sa.Column("accel", sa.String(16), nullable=False),
        sa.Column("qemu_version", sa.String(100), nullable=False),
        sa.Column("verified", sa.Boolean, nullable=False),
        sa.Column("document", sa.JSON, nullable=False),
    )
    op.create_table(
        "pins",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("fingerprint", sa.String(80), nullable=False, index=True),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("host_id", sa.Integer, nullable=True),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "clusters",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("frozen_pin_id", sa.Integer, sa.ForeignKey("pins.id", name="fk_cluster_pin"), nullable=True),
    )
    op.create_table(
        "hosts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("cluster_id", sa.Integer, sa.ForeignKey("clusters.id"), nullable=False, index=True),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("operational", sa.Boolean, nullable=False),
        sa.Column("status_note", sa.Text, nullable=False),
        sa.Column("current_state_id", sa.Integer, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "host_states",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("host_id", sa.Integer, sa.ForeignKey("hosts.id"), nullable=False, index=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("kernel", sa.String(255), nullable=False),
        sa.Column("captured_at", sa.String(64), nullable=False),
        sa.Column("qemu_version", sa.String(100), nullable=False),
        sa.Column("cpu", sa.JSON, nullable=False),
        sa.Column("facts", sa.JSON, nullable=False),
        sa.Column("unavailable", sa.JSON, nullable=False),
        sa.Column("kvm_profile_id", sa.Integer, sa.ForeignKey("profiles.id"), nullable=True),
        sa.Column("tcg_profile_id", sa.Integer, sa.ForeignKey("profiles.id"), nullable=True),
        sa.Column("changes", sa.JSON, nullable=False),
        sa.UniqueConstraint("host_id", "seq"),
    )
    with op.batch_alter_table("hosts") as batch:
        batch.create_foreign_key("fk_host_current_state", "host_states", ["current_state_id"], ["id"])
    with op.batch_alter_table("pins") as batch:
        batch.create_foreign_key("fk_pin_host", "hosts", ["host_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("pins") as batch:
        batch.drop_constraint("fk_pin_host", type_="foreignkey")
    with op.batch_alter_table("hosts") as batch:
        batch.drop_constraint("fk_host_current_state", type_="foreignkey")
    for table in ("host_states", "hosts", "clusters", "pins", "profiles"):
        op.drop_table(table)
