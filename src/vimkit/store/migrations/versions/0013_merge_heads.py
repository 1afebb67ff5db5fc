"""merge the network allocation, performance and placement journal heads

Revision ID: 0013
Revises: 0010, 0011, 0012
Create Date: 2026-11-26 01:20:00

No schema change: one head again, so that the next migration has a single parent.
"""

revision = "0013"
down_revision = ("0010", "0011", "0012")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
