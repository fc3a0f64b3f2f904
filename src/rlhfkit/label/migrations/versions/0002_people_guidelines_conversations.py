"""People, guidelines, conversation prompts: invite expiry and single use, revocation, per-project
guidelines (and when each labeler last read them), an item's prompt as a list of chat turns.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('labeler') as batch:
        batch.add_column(sa.Column('invite_expires_at', sa.Float(), nullable=True))
        # A constant default ('0', not sa.false()): SQLite adds such a column with ALTER TABLE; an expression
        # default makes batch mode rebuild the table, and dropping `labeler` fails on the rows that point at it.
        batch.add_column(sa.Column('invite_single_use', sa.Boolean(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('revoked_at', sa.Float(), nullable=True))
        batch.add_column(sa.Column('guidelines_seen_at', sa.Float(), nullable=True))
    with op.batch_alter_table('project') as batch:
        batch.add_column(sa.Column('guidelines', sa.Text(), nullable=False, server_default=''))
        batch.add_column(sa.Column('guidelines_updated_at', sa.Float(), nullable=True))
    with op.batch_alter_table('item') as batch:
        batch.add_column(sa.Column('messages', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('item') as batch:
        batch.drop_column('messages')
    with op.batch_alter_table('project') as batch:
        batch.drop_column('guidelines_updated_at')
        batch.drop_column('guidelines')
    with op.batch_alter_table('labeler') as batch:
        batch.drop_column('guidelines_seen_at')
        batch.drop_column('revoked_at')
        batch.drop_column('invite_single_use')
        batch.drop_column('invite_expires_at')
