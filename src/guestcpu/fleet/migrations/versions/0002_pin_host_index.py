"""Index the host a pinned guest runs on (what-if looks guests up by host).

Revision ID: 0002_pin_host_index
Revises: 0001_initial
"""

from __future__ import annotations

from alembic import op

revision = "0002_pin_host_index"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_pins_host_id", "pins", ["host_id"])


def downgrade() -> None:
    op.drop_index("ix_pins_host_id", table_name="pins")
