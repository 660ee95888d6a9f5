"""The console's tables: server-side sessions (so signing out ends a session everywhere) and the
bounded time series of the numbers devices report (plotted on the device page)."""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(64), primary_key=True),  # sha256 of the cookie: the cookie itself is not stored
        sa.Column("operator", sa.String(128), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
    )
    op.create_table(
        "metric_points",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("metric", sa.String(200), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("value", sa.Float, nullable=False),
    )
    op.create_index("metric_points_by_series", "metric_points", ["device_id", "metric", "at"])
    op.create_index("metric_points_by_age", "metric_points", ["at"])


def downgrade() -> None:
    op.drop_index("metric_points_by_age", "metric_points")
    op.drop_index("metric_points_by_series", "metric_points")
    op.drop_table("metric_points")
    op.drop_table("console_sessions")
