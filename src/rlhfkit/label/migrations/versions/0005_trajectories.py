"""Trajectories (issue 35, item 5): an item's tools, a candidate that is a list of messages, flagged turns.

- `item.tools`: the tool schemas of the item's conversation (TRL's `tools` column), rendered with it by the chat
  template; before it, `rlhf label import` dropped them and the export lost them.
- `candidate.messages`: a candidate that is a trajectory (assistant turns, tool calls, tool results) as its
  messages; `candidate.text` keeps its turns as plain text, as `item.prompt` does for a conversation.
- `rating.turn_flags`: the turns of a trajectory a labeler flagged, [{"turn": index in the messages, "reason"}].

Columns are only added (ALTER TABLE ADD COLUMN on SQLite, no table rebuild: see 0003), all nullable.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('item') as batch:
        batch.add_column(sa.Column('tools', sa.JSON(none_as_null=True), nullable=True))
    with op.batch_alter_table('candidate') as batch:
        batch.add_column(sa.Column('messages', sa.JSON(none_as_null=True), nullable=True))
    with op.batch_alter_table('rating') as batch:
        batch.add_column(sa.Column('turn_flags', sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('rating') as batch:
        batch.drop_column('turn_flags')
    with op.batch_alter_table('candidate') as batch:
        batch.drop_column('messages')
    with op.batch_alter_table('item') as batch:
        batch.drop_column('tools')
