"""A judge's ranking of an item, shown to labelers as a draft only when the admin says so (issue 34, item 2).

- `item.judge_ranking`: tie groups of candidate indices, best first, as a judge ranked them (`rlhf loop --judge`
  puts them there); `item.judge_name`: which judge.
- `project.judge_draft`: show the judge's ranking to labelers as a starting draft (false, the default: hidden;
  drafts bias people, and the judge's agreement with people says which it was).

Columns are only added (ALTER TABLE ADD COLUMN on SQLite, no table rebuild: see 0003).

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('item') as batch:
        batch.add_column(sa.Column('judge_ranking', sa.JSON(none_as_null=True), nullable=True))
        batch.add_column(sa.Column('judge_name', sa.String(length=200), nullable=True))
    with op.batch_alter_table('project') as batch:
        batch.add_column(sa.Column('judge_draft', sa.Boolean(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('project') as batch:
        batch.drop_column('judge_draft')
    with op.batch_alter_table('item') as batch:
        batch.drop_column('judge_name')
        batch.drop_column('judge_ranking')
