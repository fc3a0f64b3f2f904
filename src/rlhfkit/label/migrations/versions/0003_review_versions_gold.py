"""Review and quality control: answer versions (edits), locks, admins' reviews, gold items.

Only new tables and added columns: on SQLite, batch mode adds a column with ALTER TABLE ADD COLUMN and never
rebuilds a table, so the tables that other tables point at (submission, item) keep their rows and their
foreign keys are never dropped and re-created (a rebuild would need `PRAGMA foreign_keys=OFF`, which SQLite
ignores inside the migration's transaction).

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('project') as batch:
        batch.add_column(sa.Column('locked_at', sa.Float(), nullable=True))
        batch.add_column(sa.Column('gold_rate', sa.Float(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('qc_threshold', sa.Float(), nullable=False, server_default='0.7'))
    with op.batch_alter_table('item') as batch:
        batch.add_column(sa.Column('locked_at', sa.Float(), nullable=True))
        batch.add_column(sa.Column('is_gold', sa.Boolean(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('gold_ranking', sa.JSON(none_as_null=True), nullable=True))
    with op.batch_alter_table('submission') as batch:
        batch.add_column(sa.Column('version', sa.Integer(), nullable=False, server_default='1'))
        batch.add_column(sa.Column('edited_at', sa.Float(), nullable=True))
    op.create_table(
        'answer_version',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('submission_id', sa.Integer(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('answer', sa.JSON(), nullable=False),
        sa.Column('edit_client_id', sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(['submission_id'], ['submission.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('edit_client_id'),
        sa.UniqueConstraint('submission_id', 'version'),
    )
    op.create_index(op.f('ix_answer_version_submission_id'), 'answer_version', ['submission_id'])
    op.create_table(
        'review',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('submission_id', sa.Integer(), nullable=False),
        sa.Column('reviewer_id', sa.Integer(), nullable=False),
        sa.Column('action', sa.String(length=16), nullable=False),
        sa.Column('comment', sa.Text(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('resolved_at', sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(['reviewer_id'], ['labeler.id'], ),
        sa.ForeignKeyConstraint(['submission_id'], ['submission.id'], ),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(op.f('ix_review_submission_id'), 'review', ['submission_id'])


def downgrade() -> None:
    op.drop_index(op.f('ix_review_submission_id'), table_name='review')
    op.drop_table('review')
    op.drop_index(op.f('ix_answer_version_submission_id'), table_name='answer_version')
    op.drop_table('answer_version')
    with op.batch_alter_table('submission') as batch:
        batch.drop_column('edited_at')
        batch.drop_column('version')
    with op.batch_alter_table('item') as batch:
        batch.drop_column('gold_ranking')
        batch.drop_column('is_gold')
        batch.drop_column('locked_at')
    with op.batch_alter_table('project') as batch:
        batch.drop_column('qc_threshold')
        batch.drop_column('gold_rate')
        batch.drop_column('locked_at')
