"""one active run per site: `active_site_id` is the site while a run is active, NULL after,
and unique, so two starts for one site cannot both win

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 12:45:31.018656
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("igny8_automation_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("active_site_id", sa.Integer(), nullable=True))
        batch_op.create_unique_constraint("uq_automation_run_active_site", ["active_site_id"])


def downgrade() -> None:
    with op.batch_alter_table("igny8_automation_runs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_automation_run_active_site", type_="unique")
        batch_op.drop_column("active_site_id")
