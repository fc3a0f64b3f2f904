"""Whether each answer was made with the judge's ranking shown as a draft: `assignment.judge_draft`.

`project.judge_draft` (0006) is the admin's switch as it is now; an admin who turns drafts on midway left answers
made before and after it that nothing told apart, so the judge's agreement with people could not say which
answers a draft anchored (issue 34). From this revision the task page records, on the lease it serves, whether it
showed the judge's draft (`leases.LeasesStore.next_task`): the answer to the lease, and each edit of it, carries it.

Existing leases get what the event log proves, else NULL (unknown). A draft was shown only if, when a page of the
lease was served, the project collected rankings, the item was not gold and had a judge's ranking, and the switch
was on. So an existing lease is False (hidden) when its project's mode is not 'rank', its item is gold or has no
judge's ranking, or its project logged no `judge_draft` event with `shown` true, or no `judge_rankings` event, at
or before its answer was stored (every change of the switch and every store of a judge's ranking is logged since
0006, and the switch starts off). Otherwise it stays NULL: the log does not say whether a page or the API (which
never serves a draft) fetched the lease, nor when a page was last rendered.

A column is only added (ALTER TABLE ADD COLUMN on SQLite, no table rebuild: see 0003), nullable.

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

CHUNK = 500  # ids per UPDATE


def _first_events(conn, event, kind: str, shown_only: bool) -> dict[int, float]:
    """The time of each project's first event of `kind` (with `shown` true when `shown_only`)."""
    first: dict[int, float] = {}
    for project_id, at, data in conn.execute(sa.select(event.c.project_id, event.c.at, event.c.data)
                                             .where(event.c.kind == kind)):
        if project_id is None or (shown_only and not (isinstance(data, dict) and data.get('shown') is True)):
            continue
        first[project_id] = min(at, first.get(project_id, at))
    return first


def upgrade() -> None:
    with op.batch_alter_table('assignment') as batch:
        batch.add_column(sa.Column('judge_draft', sa.Boolean(), nullable=True))
    conn = op.get_bind()
    event = sa.table('event', sa.column('project_id', sa.Integer), sa.column('at', sa.Float),
                     sa.column('kind', sa.String), sa.column('data', sa.JSON))
    assignment = sa.table('assignment', sa.column('id', sa.Integer), sa.column('item_id', sa.Integer),
                          sa.column('judge_draft', sa.Boolean))
    item = sa.table('item', sa.column('id', sa.Integer), sa.column('project_id', sa.Integer),
                    sa.column('is_gold', sa.Boolean), sa.column('judge_ranking', sa.JSON(none_as_null=True)))
    project = sa.table('project', sa.column('id', sa.Integer), sa.column('mode', sa.String))
    submission = sa.table('submission', sa.column('assignment_id', sa.Integer), sa.column('created_at', sa.Float))
    switched_on = _first_events(conn, event, 'judge_draft', shown_only=True)
    ranked = _first_events(conn, event, 'judge_rankings', shown_only=False)
    rows = conn.execute(sa.select(assignment.c.id, project.c.id, project.c.mode, item.c.is_gold,
                                  item.c.judge_ranking.is_(None), submission.c.created_at)
                        .join(item, item.c.id == assignment.c.item_id).join(project, project.c.id == item.c.project_id)
                        .outerjoin(submission, submission.c.assignment_id == assignment.c.id)).all()
    hidden = []
    for aid, project_id, mode, is_gold, no_ranking, answered_at in rows:
        until = float('inf') if answered_at is None else answered_at
        logged = [first.get(project_id) for first in (switched_on, ranked)]
        if mode != 'rank' or is_gold or no_ranking or any(at is None or at > until for at in logged):
            hidden.append(aid)
    for start in range(0, len(hidden), CHUNK):
        conn.execute(sa.update(assignment).where(assignment.c.id.in_(hidden[start:start + CHUNK]))
                     .values(judge_draft=False))


def downgrade() -> None:
    with op.batch_alter_table('assignment') as batch:
        batch.drop_column('judge_draft')
