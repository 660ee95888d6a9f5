"""Deployments keep the operator's signatures over their content (``deploy push --sign-key``)."""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deployments", sa.Column("signatures", sa.JSON, nullable=True))


def downgrade() -> None:
    op.drop_column("deployments", "signatures")
