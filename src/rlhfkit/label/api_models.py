"""The JSON API's bodies and responses (pydantic), so that `/openapi.json` documents every route.

Requests are checked twice: here for their shape (types, lengths, the `kind` and `choice` values), then
by `answers.parse_answer` against the item (ranking indices, one Likert per output), which the HTML
form shares. Request bodies are `StrictIn`s: JSON's types are taken as sent, never coerced (`true` is no
Likert score, `"4"` no integer, `"yes"` no flag); their text is `inputs.Text` and their integers bounded
(`inputs.Int`, `inputs.RowId`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from rlhfkit.data.schemas import FLAGS
from rlhfkit.label.answers import MAX_TEXT, SKIP_REASONS
from rlhfkit.label.inputs import DB_INT_MAX, Int, RowId, Text
from rlhfkit.label.names import Kind, Mode, ReviewAction, Role
from rlhfkit.label.store import MAX_COMMENT, MAX_GUIDELINES, LeasedItem, Receipt, Who

MAX_TOKEN = 200  # an invite token is 43 characters (secrets.token_urlsafe(32))


class Error(BaseModel):
    detail: str = Field(description="what went wrong, on one line")


class StrictIn(BaseModel):
    """A request body: strict, so that what `parse_answer` refuses (a bool or a string for a number, a string
    for a flag) is not coerced into what it accepts before it sees it."""

    model_config = ConfigDict(strict=True)


# ------------------------------------------------------------------------------------------ session

class LoginIn(StrictIn):
    token: Text = Field(max_length=MAX_TOKEN, description="the token from an invite link (/invite/TOKEN)")


class Me(BaseModel):
    name: str
    role: Role
    project: str
    mode: Mode

    @classmethod
    def of(cls, person: Who) -> Me:
        return cls(name=person.name, role=person.role, project=person.project, mode=person.mode)


class SessionOut(Me):
    csrf_token: str = Field(description="send it as the X-CSRF-Token header on every POST")


# ----------------------------------------------------------------------------------------- labeling

class Message(BaseModel):
    """One turn of a conversation: its role and content, and any other key it was imported with (an assistant
    turn's `tool_calls`, a tool result's `name`)."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str


class Output(BaseModel):
    index: int = Field(description="the candidate's index in the imported `completions`")
    text: str = Field(description="the output; a trajectory: its turns as plain text (tool calls as name(arguments))")
    finished: bool = Field(True, description="whether the output ended with EOS; false: the sampler cut it off at "
                                             "its length limit (as imported from the candidates' `finished`)")
    messages: list[Message] | None = Field(None, description="a trajectory: its turns (assistant turns with their "
                                                             "`tool_calls`, tool results); a flag's `turn` is the "
                                                             "index of a message here. null: a text")


def outputs_of(outputs: list[tuple[int, str]], finished: list[bool], trajectories: list) -> list[Output]:
    trajectories = trajectories or [None] * len(outputs)
    return [Output(index=i, text=t, finished=f, messages=m)
            for (i, t), f, m in zip(outputs, finished or [True] * len(outputs), trajectories)]


class TaskOut(BaseModel):
    """A leased item: outputs in the order shown (a fixed shuffle), without their sources."""

    assignment_id: int
    item_id: str = Field(description="this item's public id: opaque, the same for every labeler (admins see it "
                                     "beside the imported id in the review queue)")
    mode: Mode
    prompt: str | list[Message] = Field(description="a text, or a conversation: its turns in order")
    tools: list[dict] | None = Field(None, description="the tool schemas the conversation was given (its `tools`)")
    outputs: list[Output]
    lease_expires_at: float = Field(description="UNIX seconds; after that the item may go to someone else")
    page: int = Field(description="item n of N for this labeler")
    pages: int

    @classmethod
    def of(cls, lease: LeasedItem) -> TaskOut:
        return cls(assignment_id=lease.assignment_id, item_id=lease.item_id, mode=lease.mode, prompt=lease.prompt,
                   tools=lease.tools, outputs=outputs_of(lease.outputs, lease.finished, lease.trajectories),
                   lease_expires_at=lease.expires_at,
                   page=lease.page, pages=lease.pages)


class SentBackOut(BaseModel):
    submission_id: int = Field(description="correct it with PUT /api/history/{submission_id}")
    comment: str = Field(description="what the admin asks to change")


class NextOut(BaseModel):
    task: TaskOut | None = Field(description="null: nothing is left for this labeler, or an answer was sent back")
    sent_back: SentBackOut | None = Field(None, description="an answer of mine an admin sent back: it comes before "
                                                            "any new item (as on the pages); `task` is null")


# What `answers.parse_answer` requires for each kind, stated in the schema (JSON Schema if/then): a client
# generated from /openapi.json knows that a ranking needs its Likert scores.
REQUIRED_BY_KIND = {"rank": ["ranking", "likert"], "pairwise": ["choice"], "demo": ["text"], "skip": ["reason"]}


class TurnFlag(StrictIn):
    """A turn of a trajectory flagged: its index in the output's `messages` (0 first) and why."""

    turn: Int
    reason: Text = Field(max_length=MAX_TEXT)


class SubmissionIn(StrictIn):
    """An answer to a leased item. Indices are `outputs[].index` of the task; the pairwise `choice`
    names outputs as shown: A = outputs[0], B = outputs[1]. Each kind has its required fields: rank needs
    `ranking` and `likert`, pairwise `choice`, demo `text`, skip `reason`."""

    model_config = ConfigDict(json_schema_extra={"allOf": [
        {"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]}, "then": {"required": fields}}
        for kind, fields in REQUIRED_BY_KIND.items()]})

    client_id: Text = Field(max_length=64, description="UUID made by the client; a resend with the same id "
                                                       "is stored once")
    assignment_id: RowId
    kind: Kind
    elapsed_ms: Int = 0
    ranking: list[list[Int]] | None = Field(None, description="rank: tie groups best first, e.g. [[2],[0,3],[1]]")
    likert: list[Int] | None = Field(None, description="rank (required): 1-7 per output, by output index")
    flags: list[dict[Text, bool]] | None = Field(None, description=f"rank: per output, any of {', '.join(FLAGS)}")
    notes: list[Text] | Text | None = Field(None, description="rank: one per output; pairwise/skip: one text")
    turn_flags: list[list[TurnFlag]] | None = Field(None, description="rank: per output, the turns of a trajectory "
                                                    "flagged, [{turn, reason}] ([] for none; a text output has none)")
    choice: Literal["A", "B", "equal"] | None = None
    text: Text | None = Field(None, max_length=MAX_TEXT, description="demo: the ideal response")
    reason: Text | None = Field(None, description=f"skip: one of {', '.join(SKIP_REASONS)}")


class ReceiptOut(BaseModel):
    submission_id: int
    client_id: str
    assignment_id: int
    item_id: str
    kind: Kind
    duplicate: bool = Field(description="true: this client_id was stored before; this is its first receipt")

    @classmethod
    def of(cls, r: Receipt) -> ReceiptOut:
        return cls(submission_id=r.submission_id, client_id=r.client_id, assignment_id=r.assignment_id,
                   item_id=r.item_id, kind=r.kind, duplicate=r.duplicate)


# --------------------------------------------------------------------------------------- guidelines

class GuidelinesIn(StrictIn):
    markdown: Text = Field(max_length=MAX_GUIDELINES, description="the project's instructions, Markdown (raw "
                                                                 "HTML is shown as text); empty: none")


class GuidelinesOut(BaseModel):
    project: str
    markdown: str
    html: str = Field(description="the Markdown rendered as the pages show it (raw HTML escaped)")


# -------------------------------------------------------------------------------------------- stats

class Person(BaseModel):
    name: str
    role: str
    active: bool = Field(True, description="false: revoked (no link or session works; their answers stay)")
    status: Literal["invited", "active", "revoked"] = Field("active", description="invited: has not logged in with "
                                                            "their current link yet")
    last_login_at: float | None = Field(None, description="UNIX seconds, since their current link was made")
    link: Literal["live", "expired", "used", "revoked"] = Field("live", description="used: a single-use link that "
                                                                "logged in once")
    link_expires_at: float | None = Field(None, description="UNIX seconds; null: the link never expires")
    single_use: bool = False


class Throughput(BaseModel):
    answers: int
    skips: int
    median_seconds: float | None = Field(description="client timer, per answer")
    per_hour: float | None = Field(description="answers per hour of work; null until there are 10 answers "
                                               "over 10 minutes of work")


class AgreementBlock(BaseModel):
    pairwise_agreement: float | None = Field(description="share of output pairs two labelers order alike")
    pairs_compared: int
    kendall_tau_b: float | None
    krippendorff_alpha_rank: float | None
    krippendorff_alpha_likert: float | None


class Agreement(BaseModel):
    """`agreement.summarize`: the project's agreement (one block), then each labeler's against the others."""

    metric: str = Field(description="Krippendorff's alpha's difference function")
    pairwise_agreement: float | None
    pairs_compared: int
    kendall_tau_b: float | None
    krippendorff_alpha_rank: float | None
    krippendorff_alpha_likert: float | None
    per_labeler: dict[str, AgreementBlock]


class SourceWins(BaseModel):
    wins: float = Field(description="an 'equal' counts half a win for each side")
    comparisons: int
    win_rate: float


class HeadToHead(BaseModel):
    a: str
    b: str
    a_wins: float
    comparisons: int
    a_win_rate: float


class WinRates(BaseModel):
    per_source: dict[str, SourceWins]
    head_to_head: list[HeadToHead]


class Quality(BaseModel):
    """One labeler's quality control (`review.quality`): each rate is null until there is enough data."""

    gold_answers: int
    gold_pairs: int = Field(description="output pairs of gold items scored (known ties left out)")
    gold_accuracy: float | None = Field(description="share of gold pairs ordered as the known answer; null "
                                                    "before 5 gold answers")
    agreement: float | None = Field(description="pairwise agreement with the other labelers; null before 20 "
                                                "compared pairs")
    pairs_compared: int
    flagged: bool = Field(description="a rate is below the project's threshold")
    reasons: list[str]
class BlindEval(BaseModel):
    """`blind.win_rate_b_over_a`: the people's win rate of policy B over policy A (`import --eval`)."""

    a: list[str] = Field(description="policy A's sources")
    b: list[str] = Field(description="policy B's sources")
    b_wins: float = Field(description="a tie counts half")
    ties: int
    n: int = Field(description="answers (one per labeler per item)")
    rate: float | None = Field(description="b_wins / n; null before the first answer")
    ci_low: float | None = Field(description="95% Wilson score interval")
    ci_high: float | None


class Stats(BaseModel):
    """`stats.project_stats`: progress, throughput, agreement; win rates for a pairwise project."""

    project: str
    mode: Mode
    overlap: int
    items: int
    complete: int = Field(description="items with k (overlap) answers")
    answers: dict[str, int] = Field(description="answers per kind (rank, pairwise, demo, skip)")
    live_leases: int
    people: list[Person]
    throughput: dict[str, Throughput]
    agreement: Agreement
    win_rates: WinRates | None = Field(None, description="pairwise projects only (blind A/B evaluation)")
    locked: bool = Field(False, description="the project is closed for edits (`rlhf label lock`)")
    gold_items: int = Field(0, description="items with a known answer, mixed into every labeler's queue")
    gold_rate: float = Field(0.0, description="the share of a labeler's items that are gold")
    qc_threshold: float = Field(0.7, description="labelers whose gold accuracy or agreement is below it are flagged")
    quality: dict[str, Quality] = Field(default_factory=dict, description="per labeler: quality control")
    blind_eval: BlindEval | None = Field(None, description="projects imported with --eval only")


# ------------------------------------------------------------------------------------ history, review

class AnswerOut(BaseModel):
    """An answer as stored: tiers by candidate index (0 = best; ties share a tier), ratings, texts."""

    kind: Kind
    tiers: dict[int, int] | None = Field(None, description="candidate index -> tier (0 = best; ties share one)")
    choice: str | None = Field(None, description="pairwise: A, B or equal, as the outputs were shown")
    likert: list[int | None] | None = None
    flags: list[dict[str, bool]] | None = None
    output_notes: list[str] | None = None
    turn_flags: list[list[dict] | None] | None = Field(None, description="per output: a trajectory's flagged turns "
                                                       "[{turn, reason}] (null: a text output)")
    notes: str | None = None
    text: str | None = Field(None, description="demo: the demonstration")
    skip_reason: str | None = None
    elapsed_ms: int = 0


class ReviewOut(BaseModel):
    action: ReviewAction
    comment: str
    open: bool = Field(description="sent back and not edited yet")


class VersionOut(BaseModel):
    version: int
    at: float
    answer: AnswerOut


class HistoryEntry(BaseModel):
    """One of my answers as it stands now (its newest version)."""

    submission_id: int
    item_id: str
    mode: Mode
    prompt: str | list[Message]
    tools: list[dict] | None = None
    outputs: list[Output] = Field(description="in the order they were shown to me")
    submitted_at: float
    edited_at: float | None
    version: int
    answer: AnswerOut
    editable: bool = Field(description="false: a skip, or the project or item is locked")
    review: ReviewOut | None
    versions: list[VersionOut] | None = Field(None, description="the earlier versions, oldest first")

    @classmethod
    def of(cls, e: dict) -> HistoryEntry:
        return cls(**{**e, "outputs": outputs_of(e["outputs"], e["finished"], e.get("trajectories"))})


class HistoryOut(BaseModel):
    answers: list[HistoryEntry]


class EditIn(SubmissionIn):
    """A new version of one of my answers: the same fields as an answer (its `assignment_id` is ignored)."""

    assignment_id: Annotated[int, Field(ge=0, le=DB_INT_MAX)] = 0


class ReviewIn(StrictIn):
    action: ReviewAction
    comment: Text = Field("", max_length=MAX_COMMENT, description="send_back: what to change (required)")


class ReviewDone(BaseModel):
    submission_id: int
    action: ReviewAction
    comment: str
    version: int = Field(description="the answer's version that was judged")


class ReviewAnswer(BaseModel):
    """One labeler's answer in the review queue."""

    submission_id: int
    labeler: str
    kind: Kind
    shown_order: list[int] = Field(description="candidate indices in the order this labeler saw them: their Output n "
                                               "(A, B for pairwise) is completions[shown_order[n - 1]]")
    version: int
    elapsed_ms: int
    tiers: dict[int, int] | None
    choice: str | None
    likert: list[int | None] | None
    flags: list[dict[str, bool]] | None
    output_notes: list[str] | None
    turn_flags: list[list[dict] | None] | None = Field(None, description="per output: a trajectory's flagged turns "
                                                       "[{turn, reason}] (null: a text output)")
    notes: str | None
    demonstration: str | None
    skip_reason: str | None
    review: dict | None = Field(description="the latest review: action, comment, by, version, open")


class ReviewItem(BaseModel):
    id: str
    public_id: str | None = Field(None, description="the id labelers see for this item (in their tasks and history)")
    prompt: str | list[Message]
    tools: list[dict] | None = None
    completions: list[dict]
    locked: bool
    disagreement: float | None = Field(description="1 - pairwise agreement among its labelers; null: not comparable")
    agreement: dict
    answers: list[ReviewAnswer]


class ReviewQueueOut(BaseModel):
    project: str
    items: list[ReviewItem] = Field(description="most disputed first")
