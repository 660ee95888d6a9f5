"""Per-deployment device rows (targeted, applied, outcome) kept up to date, so status counts are an
indexed GROUP BY instead of a pass over every device; ``counted_cursor`` is the change feed
position they reflect (-1: never counted, so the first status read counts everything) and
``pruned_below`` the newest change id pruned from the feed (a counter behind it counts everything)."""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployment_devices",
        sa.Column("deployment_id", sa.String, primary_key=True),
        sa.Column("device_id", sa.String, primary_key=True),
        sa.Column("targeted", sa.Boolean, nullable=False),
        sa.Column("applied", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("code", sa.Integer),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("deployment_devices_by_device", "deployment_devices", ["device_id"])
    op.bulk_insert(
        sa.table("meta", sa.column("key"), sa.column("value")),
        [{"key": "counted_cursor", "value": -1}, {"key": "pruned_below", "value": 0}],
    )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM meta WHERE key IN ('counted_cursor', 'pruned_below')"))
    op.drop_index("deployment_devices_by_device", "deployment_devices")
    op.drop_table("deployment_devices")
