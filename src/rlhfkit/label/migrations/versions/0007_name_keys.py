"""Look-alike names refused by the database: `labeler.name_key`, unique per project.

The store refuses a name that reads like another person's of the project ("ANN", "ａｎｎ" beside "ann"; issue 31,
item 16) by reading the project's people and then inserting: on PostgreSQL two invites at once could both read,
both find nobody and both insert. `labeler.name_key` (`inputs.name_key` of the name) with a unique index on
(project_id, name_key) makes the second insert fail, and the store reports it as the same refusal.

Existing people get their key here. People who already look alike (stored before the rule, or by that race) keep
everything (name, answers, link, sessions): the first of them (lowest id) gets the key, each later one NULL, which a
unique index lets repeat on SQLite and PostgreSQL alike. The store's own check still reads every name, so nobody
new can look like any of them. The key is computed with today's `inputs.name_key`; a release that changes the rule
recomputes it in its own migration.

A column and an index are only added (ALTER TABLE ADD COLUMN and CREATE UNIQUE INDEX on SQLite, no table rebuild:
see 0003), so the column stays nullable.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

from rlhfkit.label.inputs import name_key

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('labeler') as batch:
        batch.add_column(sa.Column('name_key', sa.Text(), nullable=True))
    conn = op.get_bind()
    labeler = sa.table('labeler', sa.column('id', sa.Integer), sa.column('project_id', sa.Integer),
                       sa.column('name', sa.String), sa.column('name_key', sa.Text))
    taken: set[tuple[int, str]] = set()
    for user_id, project_id, name in conn.execute(sa.select(labeler.c.id, labeler.c.project_id, labeler.c.name)
                                                  .order_by(labeler.c.id)).all():
        key = name_key(name)
        if (project_id, key) in taken:
            continue  # looks like an earlier person of the project: stays NULL
        taken.add((project_id, key))
        conn.execute(sa.update(labeler).where(labeler.c.id == user_id).values(name_key=key))
    op.create_index('uq_labeler_name_key', 'labeler', ['project_id', 'name_key'], unique=True)


def downgrade() -> None:
    op.drop_index('uq_labeler_name_key', table_name='labeler')
    with op.batch_alter_table('labeler') as batch:
        batch.drop_column('name_key')
