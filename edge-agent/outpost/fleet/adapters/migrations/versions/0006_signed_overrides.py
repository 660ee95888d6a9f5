"""Module twins keep the operator's signatures over their desired properties (``outpost device twin
--sign-key``), so a device with a trust root can verify desired properties set on it alone."""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("module_twins", sa.Column("desired_signatures", sa.JSON, nullable=True))


def downgrade() -> None:
    op.drop_column("module_twins", "desired_signatures")
