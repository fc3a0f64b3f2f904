"""The JSON API's bodies and responses (pydantic), so that `/openapi.json` documents every route.

Requests are checked twice: here for their shape (types, lengths, the `kind` and `choice` values), then
by `answers.parse_answer` against the item (ranking indices, one Likert per output), which the HTML
form shares.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rlhfkit.data.schemas import FLAGS
from rlhfkit.label.answers import MAX_TEXT, SKIP_REASONS
from rlhfkit.label.db import Kind, Mode, Role
from rlhfkit.label.store import MAX_GUIDELINES, LeasedItem, Receipt, Who

MAX_TOKEN = 200  # an invite token is 43 characters (secrets.token_urlsafe(32))


class Error(BaseModel):
    detail: str = Field(description="what went wrong, on one line")


# ------------------------------------------------------------------------------------------ session

class LoginIn(BaseModel):
    token: str = Field(max_length=MAX_TOKEN, description="the token from an invite link (/invite/TOKEN)")


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
    """One turn of a conversation prompt."""

    role: str
    content: str


class Output(BaseModel):
    index: int = Field(description="the candidate's index in the imported `completions`")
    text: str
    finished: bool = Field(True, description="whether the output ended with EOS; false: the sampler cut it off at "
                                             "its length limit (as imported from the candidates' `finished`)")


class TaskOut(BaseModel):
    """A leased item: outputs in the order shown (a fixed shuffle), without their sources."""

    assignment_id: int
    item_id: str = Field(description="the `id` of the imported record")
    mode: Mode
    prompt: str | list[Message] = Field(description="a text, or a conversation: its turns in order")
    outputs: list[Output]
    lease_expires_at: float = Field(description="UNIX seconds; after that the item may go to someone else")
    page: int = Field(description="item n of N for this labeler")
    pages: int

    @classmethod
    def of(cls, lease: LeasedItem) -> TaskOut:
        return cls(assignment_id=lease.assignment_id, item_id=lease.item_id, mode=lease.mode, prompt=lease.prompt,
                   outputs=[Output(index=i, text=t, finished=f)
                            for (i, t), f in zip(lease.outputs, lease.finished or [True] * len(lease.outputs))],
                   lease_expires_at=lease.expires_at,
                   page=lease.page, pages=lease.pages)


class NextOut(BaseModel):
    task: TaskOut | None = Field(description="null: nothing is left for this labeler")


# What `answers.parse_answer` requires for each kind, stated in the schema (JSON Schema if/then): a client
# generated from /openapi.json knows that a ranking needs its Likert scores.
REQUIRED_BY_KIND = {"rank": ["ranking", "likert"], "pairwise": ["choice"], "demo": ["text"], "skip": ["reason"]}


class SubmissionIn(BaseModel):
    """An answer to a leased item. Indices are `outputs[].index` of the task; the pairwise `choice`
    names outputs as shown: A = outputs[0], B = outputs[1]. Each kind has its required fields: rank needs
    `ranking` and `likert`, pairwise `choice`, demo `text`, skip `reason`."""

    model_config = ConfigDict(json_schema_extra={"allOf": [
        {"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]}, "then": {"required": fields}}
        for kind, fields in REQUIRED_BY_KIND.items()]})

    client_id: str = Field(max_length=64, description="UUID made by the client; a resend with the same id "
                                                      "is stored once")
    assignment_id: int
    kind: Kind
    elapsed_ms: int = 0
    ranking: list[list[int]] | None = Field(None, description="rank: tie groups best first, e.g. [[2],[0,3],[1]]")
    likert: list[int] | None = Field(None, description="rank (required): 1-7 per output, by output index")
    flags: list[dict[str, bool]] | None = Field(None, description=f"rank: per output, any of {', '.join(FLAGS)}")
    notes: list[str] | str | None = Field(None, description="rank: one per output; pairwise/skip: one text")
    choice: Literal["A", "B", "equal"] | None = None
    text: str | None = Field(None, max_length=MAX_TEXT, description="demo: the ideal response")
    reason: str | None = Field(None, description=f"skip: one of {', '.join(SKIP_REASONS)}")


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

class GuidelinesIn(BaseModel):
    markdown: str = Field(max_length=MAX_GUIDELINES, description="the project's instructions, Markdown (raw "
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
