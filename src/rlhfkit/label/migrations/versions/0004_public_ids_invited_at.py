"""Opaque public item ids and when a person was last invited (issue 31, items 13 and 19).

- `item.public_id`: the id labelers see for an item, random (64 bits, hex), the same for every labeler. Before it,
  labelers saw the imported id of a regular item and a digest on a gold one: the id's shape told gold apart.
  Existing items get a random one here.
- `labeler.invited_at`: when the person's current link was made (the People table tells "invited, not logged in
  yet" from "active"); existing people get their `created_at`.

Columns are only added (ALTER TABLE ADD COLUMN on SQLite, no table rebuild: see 0003), so they stay nullable.

Revision ID: 0004
Revises: 0003
"""
import secrets

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('item') as batch:
        batch.add_column(sa.Column('public_id', sa.String(length=32), nullable=True))
    with op.batch_alter_table('labeler') as batch:
        batch.add_column(sa.Column('invited_at', sa.Float(), nullable=True))
    conn = op.get_bind()
    item = sa.table('item', sa.column('id', sa.Integer), sa.column('public_id', sa.String))
    for (item_id,) in conn.execute(sa.select(item.c.id)).all():
        conn.execute(sa.update(item).where(item.c.id == item_id).values(public_id=secrets.token_hex(8)))
    labeler = sa.table('labeler', sa.column('invited_at', sa.Float), sa.column('created_at', sa.Float))
    conn.execute(sa.update(labeler).values(invited_at=labeler.c.created_at))
    op.create_index(op.f('ix_item_public_id'), 'item', ['public_id'], unique=True)


def downgrade() -> None:
    op.drop_index(op.f('ix_item_public_id'), table_name='item')
    with op.batch_alter_table('labeler') as batch:
        batch.drop_column('invited_at')
    with op.batch_alter_table('item') as batch:
        batch.drop_column('public_id')
