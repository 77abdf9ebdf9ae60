"""automation configs per site; site publishing: every_2_days interval, max_posts_per_day

- igny8_automation_configs: one row per site (batch sizes, models, run schedule); a site
  without a row runs on the defaults, so no rows are created here.
- igny8_sites.schedule_interval widens from VARCHAR(10) to VARCHAR(20) for "every_2_days";
  "hourly" is no longer offered and stored "hourly" rows become "daily" (downgrade turns
  "every_2_days" into "daily", the nearest value the old column holds).
- igny8_sites.max_posts_per_day: NOT NULL, existing sites get 1 (the server default).

SQLite cannot change a column's type in place, so batch mode rebuilds igny8_sites (copy,
drop, rename). Dropping a table that other tables reference fails with foreign keys on
(the app's connections turn them on, and the pragma cannot change inside the migration's
transaction), so on SQLite the sites are set aside first and put back after the rebuild,
with the foreign key checks deferred to the commit, when every reference resolves again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 12:33:30.859416
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
import sqlmodel
from alembic import op

import models.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SITES = "igny8_sites"
SITES_ASIDE = "igny8_sites_0003_aside"


def upgrade() -> None:
    op.create_table(
        "igny8_automation_configs",
        sa.Column("keywords_per_cluster_call", sa.Integer(), nullable=False),
        sa.Column("ideas_batch_size", sa.Integer(), nullable=False),
        sa.Column("content_batch_size", sa.Integer(), nullable=False),
        sa.Column("image_prompts_batch_size", sa.Integer(), nullable=False),
        sa.Column("image_batch_size", sa.Integer(), nullable=False),
        sa.Column("max_keywords_per_run", sa.Integer(), nullable=True),
        sa.Column("text_model", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("image_model", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("max_in_article_images", sa.Integer(), nullable=True),
        sa.Column("schedule_enabled", sa.Boolean(), nullable=False),
        sa.Column("schedule_frequency", sa.String(length=10), nullable=False),
        sa.Column("schedule_time", sqlmodel.sql.sqltypes.AutoString(length=5), nullable=False),
        sa.Column("schedule_weekday", sa.Integer(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("created_at", models.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", models.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["igny8_accounts.id"]),
        sa.ForeignKeyConstraint(["site_id"], ["igny8_sites.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site_id"),
    )
    with op.batch_alter_table("igny8_automation_configs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_igny8_automation_configs_account_id"), ["account_id"], unique=False
        )

    with _sites_set_aside_on_sqlite(), op.batch_alter_table(SITES, schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("max_posts_per_day", sa.Integer(), nullable=False, server_default="1")
        )
        batch_op.alter_column(
            "schedule_interval",
            existing_type=sa.String(length=10),
            type_=sa.String(length=20),
            existing_nullable=False,
        )
    op.execute(
        sa.text(
            f"UPDATE {SITES} SET schedule_interval = 'daily' WHERE schedule_interval = 'hourly'"
        )
    )


def downgrade() -> None:
    op.execute(
        sa.text(
            f"UPDATE {SITES} SET schedule_interval = 'daily' "
            "WHERE schedule_interval = 'every_2_days'"
        )
    )
    with _sites_set_aside_on_sqlite(), op.batch_alter_table(SITES, schema=None) as batch_op:
        batch_op.alter_column(
            "schedule_interval",
            existing_type=sa.String(length=20),
            type_=sa.String(length=10),
            existing_nullable=False,
        )
        batch_op.drop_column("max_posts_per_day")

    with op.batch_alter_table("igny8_automation_configs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_igny8_automation_configs_account_id"))
    op.drop_table("igny8_automation_configs")


@contextmanager
def _sites_set_aside_on_sqlite() -> Iterator[None]:
    """On SQLite: move the sites into a temporary table while the block rebuilds
    igny8_sites, then put them back (only the columns both versions have; the others take
    their defaults). Deleting them makes the other tables' references dangle until they
    are put back, so the checks wait for the commit (`defer_foreign_keys`, reset by it).
    Elsewhere the block just runs: PostgreSQL alters the column in place."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        yield
        return
    bind.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
    bind.exec_driver_sql(f"CREATE TEMP TABLE {SITES_ASIDE} AS SELECT * FROM {SITES}")
    bind.exec_driver_sql(f"DELETE FROM {SITES}")
    yield
    kept = _column_names(bind, SITES_ASIDE, schema="temp") & _column_names(bind, SITES)
    columns = ", ".join(f'"{name}"' for name in sorted(kept))
    bind.exec_driver_sql(f"INSERT INTO {SITES} ({columns}) SELECT {columns} FROM {SITES_ASIDE}")
    bind.exec_driver_sql(f"DROP TABLE {SITES_ASIDE}")


def _column_names(bind: sa.Connection, table: str, schema: str | None = None) -> set[str]:
    return {column["name"] for column in sa.inspect(bind).get_columns(table, schema=schema)}
