"""Scores of candidate sets for active selection and pre-labels (the pure decisions are data/selection.py and
data/prelabels.py):

- `ensemble_scores`: E reward heads' scores of each candidate, for `--select uncertain|mixed`. The heads are
  bootstrap heads on the reward model's frozen features (a last-layer ensemble, as Dwaracherla et al. 2024,
  "Efficient Exploration for LLMs", put an ensemble of heads on a frozen LM): φ(x, y) is the RM's last hidden
  state where its head reads, and head e minimizes on a bootstrap resample (counts c_e ~ Multinomial(P, 1/P)) of
  the P strictly ordered pairs (y_w ≻ y_l) labeled so far
      L_e(w) = −(1/P) Σ_p c_{e,p} · log σ(w·(φ(x, y_w) − φ(x, y_l))) + (λ/2)·‖w − w_RM‖²
  starting from, and pulled towards, the RM's own head w_RM. Why this and not E full reward models: one forward
  pass of one RM over the candidates and the labeled pairs, then E logistic regressions on D-dimensional
  features (milliseconds), where bootstrap RMs cost E trainings per round; it measures how much the labeled pairs
  pin down the head — what a new label can change — though not the trunk's own uncertainty. Without labeled
  pairs (or with --ensemble 1), E = 1: the RM's own score, and `uncertain` reduces to margins near zero.
- `load_scorer`: a judge that scores each candidate of a set: a reward model directory (r(x, y)), a reward
  function or a named judge (`module:function`, `world:gold`: its first metric), or any Hugging Face causal LM
  directory prompted to judge (`LMJudge`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rlhfkit.data.chat import is_conversation
from rlhfkit.data.collate import pad_right
from rlhfkit.errors import UserError
from rlhfkit.models.loading import load_causal_lm, load_tokenizer, model_kind, position_limit
from rlhfkit.models.reward_model import RewardModel
from rlhfkit.models.scalar import Truncation, read_index, response_sequences
from rlhfkit.rewards.sources import load_judge

DEFAULT_HEADS = 5
HEAD_L2 = 1.0        # λ: how strongly each bootstrap head stays near the RM's head
HEAD_STEPS = 200
HEAD_LR = 0.05


# ------------------------------------------------------------------------------------ bootstrap heads

def bootstrap_heads(diffs: torch.Tensor, w0: torch.Tensor, heads: int, seed: int, l2: float = HEAD_L2,
                    steps: int = HEAD_STEPS, lr: float = HEAD_LR) -> torch.Tensor:
    """[E, D] heads, each minimizing L_e(w) (module docstring) on its own bootstrap counts of the pairs' feature
    differences `diffs` [P, D] (winner minus loser), from w0 [D] by Adam."""
    g = torch.Generator().manual_seed(seed)
    p = diffs.shape[0]
    counts = torch.stack([torch.bincount(torch.randint(p, (p,), generator=g), minlength=p) for _ in range(heads)])
    w = w0.detach().float().repeat(heads, 1).clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = bootstrap_loss(w, diffs.float(), counts.float(), w0.float(), l2)
        loss.sum().backward()
        opt.step()
    return w.detach()


def bootstrap_loss(w: torch.Tensor, diffs: torch.Tensor, counts: torch.Tensor, w0: torch.Tensor, l2: float
                   ) -> torch.Tensor:
    """[E]: L_e(w_e) = −(1/P) Σ_p c_{e,p} · log σ(w_e·Δφ_p) + (λ/2)·‖w_e − w0‖²."""
    margins = w @ diffs.T                                           # [E, P]
    nll = -(counts * F.logsigmoid(margins)).sum(-1) / diffs.shape[0]
    return nll + 0.5 * l2 * ((w - w0) ** 2).sum(-1)


@torch.no_grad()
def features(rm: RewardModel, prompts: list, texts: list[str], finished: list[bool], batch_size: int = 128
             ) -> torch.Tensor:
    """φ(x, y) [N, D]: the RM's last hidden state where its head reads (r = w·φ + b)."""
    rows = response_sequences(rm.tokenizer, prompts, texts, finished, rm.max_length, Truncation(rm.max_length))
    pad = rm.tokenizer.pad_token_id if rm.tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = torch.zeros(len(rows), rm.model.head.in_features)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids = pad_right([rows[i] for i in idx], pad)
        mask = pad_right([[1] * len(rows[i]) for i in idx], 0)
        hidden = rm.model.hidden(ids, mask)
        at = read_index(ids, mask, rm.model.pad_token_id)
        out[idx] = hidden[torch.arange(len(idx)), at].float()
    return out


def ensemble_scores(rm: RewardModel, items: list[dict], rankings: list[dict] | None, heads: int, seed: int
                    ) -> list[tuple[tuple[float, ...], ...]]:
    """Per candidates record, the E heads' scores of its completions ([E][M]; module docstring): bootstrap
    heads fitted on `rankings`' strictly ordered pairs, or the RM's own score when there are none or heads ≤ 1."""
    def texts_of(rec):
        return [c["text"] if isinstance(c, dict) else c for c in rec["completions"]]
    prompts = [it["prompt"] for it in items for _ in it["completions"]]
    texts = [t for it in items for t in texts_of(it)]
    done = [bool(c.get("finished", True)) for it in items for c in it["completions"]]
    phi = features(rm, prompts, texts, done)
    w0 = rm.model.head.weight.detach().float().reshape(-1)
    pairs = []
    for rec in rankings or []:
        pos = {i: g for g, group in enumerate(rec["ranking"]) for i in group}
        pairs += [(rec, i, j) for i in pos for j in pos if pos[i] < pos[j]]
    if heads > 1 and pairs:
        keys = list(dict.fromkeys((id(rec), k) for rec, i, j in pairs for k in (i, j)))
        where = {key: n for n, key in enumerate(keys)}
        recs = {id(rec): rec for rec, _, _ in pairs}
        fin = {id(r): r.get("finished") or [True] * len(r["completions"]) for r in recs.values()}
        lab = features(rm, [recs[r]["prompt"] for r, _ in keys], [recs[r]["completions"][k] for r, k in keys],
                       [bool(fin[r][k]) for r, k in keys])
        diffs = torch.stack([lab[where[(id(rec), i)]] - lab[where[(id(rec), j)]] for rec, i, j in pairs])
        w = bootstrap_heads(diffs, w0, heads, seed)
    else:
        w = w0[None]
    scores = (w @ phi.T).numpy()  # [E, N]; the bias is the same for every candidate and cancels in margins
    out, n = [], 0
    for it in items:
        m = len(it["completions"])
        out.append(tuple(tuple(float(v) for v in row[n:n + m]) for row in scores))
        n += m
    return out


# ----------------------------------------------------------------------------------------------- judges

JUDGE_QUESTION = ("Question: {prompt}\nAnswer: {answer}\nIs this answer correct, helpful and harmless? "
                  "Reply Yes or No.\nReply:")


@dataclass
class LMJudge:
    """Any Hugging Face causal LM as a judge. Each candidate is scored alone by the log-odds of the next token
        s(x, y) = log p(" Yes" | q(x, y)) − log p(" No" | q(x, y))
    where q is JUDGE_QUESTION (through the tokenizer's chat template as one user message when it has one); when
    the two words' tokens share a prefix (a lone space), q ends with it and the first tokens that differ are
    compared. Its ranking sorts by s; σ(s_i − s_j) is the Bradley–Terry probability its confidence reads."""
    model: object
    tokenizer: object
    yes: int
    no: int
    prefix: list[int]   # the tokens " Yes" and " No" share (a byte-level BPE may split off the space)

    @classmethod
    def load(cls, path: str) -> LMJudge:
        tokenizer = load_tokenizer(path)
        model = load_causal_lm(path, tokenizer).eval()
        yes, no = (tokenizer.encode(w, add_special_tokens=False) for w in (" Yes", " No"))
        common = 0
        while common < min(len(yes), len(no)) and yes[common] == no[common]:
            common += 1
        if common == min(len(yes), len(no)):
            raise UserError(f"{path}: its tokenizer does not tell ' Yes' from ' No' (the LM judge reads them)")
        return cls(model, tokenizer, yes[common], no[common], yes[:common])

    def question_ids(self, prompt, answer: str) -> list[int]:
        text = prompt if not is_conversation(prompt) else "\n".join(m.get("content") or "" for m in prompt)
        q = JUDGE_QUESTION.format(prompt=text, answer=answer)
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                                      tokenize=False)
            ids = self.tokenizer.encode(text, add_special_tokens=False)
        else:
            ids = self.tokenizer.encode(q)
        return ids + self.prefix

    @torch.no_grad()
    def __call__(self, prompts: list, texts: list[str], finished: list[bool]) -> list[float]:
        limit = position_limit(self.model) or 4096  # a long question keeps its end: the answer and the ask
        rows = [self.question_ids(p, t)[-limit:] for p, t in zip(prompts, texts)]
        out = []
        for start in range(0, len(rows), 32):
            chunk = rows[start:start + 32]
            ids = pad_right(chunk, self.tokenizer.pad_token_id or 0)
            mask = pad_right([[1] * len(r) for r in chunk], 0)
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
            last = logits[torch.arange(len(chunk)), mask.sum(-1) - 1].log_softmax(-1)
            out += (last[:, self.yes] - last[:, self.no]).tolist()
        return out


def check_judge(spec: str) -> None:
    """Refuse a judge that cannot load, before a run starts: a directory that is neither a reward model nor a
    causal LM, or a function or named judge that does not import (one line naming it)."""
    if Path(spec).is_dir():
        kind, what = model_kind(spec)
        if kind not in ("causal", "scalar"):
            what = what or "config.json names no architecture"
            raise UserError(f"--judge {spec}: not a reward model or a causal LM ({what})")
        return
    load_judge(spec)


def load_scorer(spec: str, tokenizer_dir: str | Path | None = None):
    """(name, score(prompts, texts, finished) -> list[float]) of the judge `spec` (module docstring)."""
    if Path(spec).is_dir():
        kind, what = model_kind(spec)
        if kind == "causal":
            return f"lm:{Path(spec).name}", LMJudge.load(spec)
        rm = RewardModel.load(spec, load_tokenizer(tokenizer_dir or spec))
        return f"rm:{Path(spec).name}", lambda p, t, f: rm.score_texts(p, t, f).tolist()
    judge = load_judge(spec)

    def score(prompts, texts, finished):
        values = next(iter(judge.score(prompts, texts, finished, [{} for _ in texts], ["judge"] * len(texts))
                           .values()))
        return [math.nan if v is None else float(v) for v in values]
    return spec, score


def score_sets(score, items: list[dict]) -> list[list[float]]:
    """The judge's score of each completion of each candidates record."""
    prompts = [it["prompt"] for it in items for _ in it["completions"]]
    texts = [c["text"] for it in items for c in it["completions"]]
    done = [bool(c.get("finished", True)) for it in items for c in it["completions"]]
    flat = np.asarray(score(prompts, texts, done), dtype=float)
    out, n = [], 0
    for it in items:
        out.append(flat[n:n + len(it["completions"])].tolist())
        n += len(it["completions"])
    return out
