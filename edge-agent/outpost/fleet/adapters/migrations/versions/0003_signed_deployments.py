"""Deployments keep the operator's signatures over their content (``deploy push --sign-key``); devices'
signing keys, registered by an operator, prove where an upstream export carried home came from."""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deployments", sa.Column("signatures", sa.JSON, nullable=True))
    op.create_table(
        "device_keys",
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("device_created", sa.String(32), nullable=False),
        sa.Column("added", sa.String(32), nullable=False),
        sa.Column("added_by", sa.String(128), nullable=False),
        sa.Column("last_export_at", sa.String(64), nullable=True),
        sa.Column("last_export_sha256", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("device_keys")
    op.drop_column("deployments", "signatures")
