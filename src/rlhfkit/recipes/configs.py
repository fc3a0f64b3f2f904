"""The configs of the commands that compose the stages — `rlhf sample`, `demo`, `compare`, `loop` and `bench ...` —
with the plans and method names their checks read (light: `rlhf CMD --help` loads no torch; each command's module
imports its config from here)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from rlhfkit.config import check_at_least, default_of, option, required
from rlhfkit.data.options import DataOptions
from rlhfkit.data.prelabels import DEFAULT_CONFIDENCE, DEFAULT_THRESHOLD
from rlhfkit.data.selection import STRATEGIES, check_strategy
from rlhfkit.engines.options import EngineOptions, check_engine
from rlhfkit.errors import UserError
from rlhfkit.label.configs import DEFAULT_PUBLIC_URL
from rlhfkit.models.options import PrecisionOptions
from rlhfkit.runtime.trackers import check_report_to
from rlhfkit.world.verify import VERIFIER


@dataclass(frozen=True)
class Plan:
    """How much of each stage a preset runs (sized so the tiny demo takes minutes on 2 CPU cores)."""
    sft_epochs: int
    sft_lr: float
    label_prompts: int        # prompts sampled for labeling (K outputs each)
    k: int
    temperatures: tuple[float, ...]
    labelers: int
    per_item: int
    rm_lr: float
    rm_epochs: int
    ppo_steps: int
    ppo_batch: int
    ppo_minibatch: int
    ppo_lr: float
    save_every: int
    eval_prompts: int         # held-out prompts used for win rates
    bon_n: int


PLANS = {
    "micro": Plan(sft_epochs=2, sft_lr=2e-3, label_prompts=120, k=4, temperatures=(0.7, 1.0), labelers=5, per_item=2,
                  rm_lr=3e-4, rm_epochs=1, ppo_steps=4, ppo_batch=16, ppo_minibatch=8, ppo_lr=1e-4, save_every=2,
                  eval_prompts=64, bon_n=4),
    "tiny": Plan(sft_epochs=10, sft_lr=2e-3, label_prompts=1500, k=4, temperatures=(0.7, 1.0), labelers=5, per_item=2,
                 rm_lr=3e-4, rm_epochs=1, ppo_steps=20, ppo_batch=64, ppo_minibatch=32, ppo_lr=1e-4, save_every=5,
                 eval_prompts=400, bon_n=16),
    "small": Plan(sft_epochs=5, sft_lr=5e-4, label_prompts=4000, k=4, temperatures=(0.7, 1.0), labelers=5, per_item=2,
                  rm_lr=1e-4, rm_epochs=1, ppo_steps=300, ppo_batch=64, ppo_minibatch=32, ppo_lr=3e-5, save_every=50,
                  eval_prompts=1000, bon_n=16),
}


DEFAULT_PRESET = "tiny"  # the plan of `rlhf demo` and `rlhf loop` without --preset or a --world that has one


def check_preset(preset: str) -> None:
    if preset not in PLANS:
        raise UserError(f"config key 'preset': unknown preset {preset!r} (one of {', '.join(PLANS)})")


METHODS = ("sft", "bon", "dpo", "ppo", "rloo", "grpo")


DEFAULT_METHODS = ("sft", "bon", "dpo", "ppo", "rloo")  # what `rlhf compare` runs unless --methods says


RL_METHODS = ("ppo", "rloo", "grpo")  # one trainer, `rlhf ppo --advantage gae|rloo|grpo`


TRAINED_ON = ("rm", "fn", "rm+fn")    # what an RL method's r(x, y) is: the RM, reward functions, their sum


@dataclass(frozen=True)
class MethodSettings:
    """The settings of the methods of `rlhf compare` (its CompareConfig takes its defaults from here)."""
    methods: tuple[str, ...] = DEFAULT_METHODS
    kl_coef: float = 0.05
    ppo_steps: int | None = None
    rl_lr: float | None = None
    num_generations: int = 4
    trained_on: tuple[str, ...] = ("rm",)
    reward_fn: tuple[str, ...] = (VERIFIER,)
    dpo_beta: float = 0.1
    dpo_lr: float = 1e-4
    dpo_epochs: int = 1
    bon_n: int = 16
    curve_points: int = 4
    threads: int = 0


DEFAULTS = MethodSettings()


BF16_CHOICES = ("auto", "yes", "no")


SOURCES = ("simulated", "files", "app")


def check_source(source: str) -> None:
    if source not in SOURCES:
        raise UserError(f"config key 'labels': expected one of {', '.join(SOURCES)}, got {source!r}")


@dataclass
class StageOptions:
    """What a command that runs trainers passes on to each of them."""
    threads: int = option(0, "torch CPU threads (0: torch's default)")
    report_to: list[str] = option([], "the trainers it runs also log to these trackers: tensorboard, wandb, "
                                  "trackio (comma-separated; one tracker run per stage, named by its directory)")

    def check(self) -> None:
        check_report_to(self.report_to)
        check_at_least(self, 0, "threads")


@dataclass
class RLOptions:
    """The `rlhf ppo` settings of a command that runs PPO (and RLOO, GRPO): β and the iterations."""
    kl_coef: float = option(DEFAULTS.kl_coef, "β of the KL penalty to the SFT policy (0: none, the "
                            "over-optimization control)")
    ppo_steps: int | None = option(DEFAULTS.ppo_steps, "PPO iterations of each PPO, RLOO or GRPO run (default: the "
                                   "preset's)")

    def check_rl(self) -> None:
        if self.kl_coef < 0:
            raise UserError("config key 'kl_coef' must be >= 0")
        check_at_least(self, 1, "ppo_steps")


@dataclass
class SampleConfig(DataOptions, EngineOptions, PrecisionOptions):
    models: list[str] = option([], "policy directories, comma-separated (e.g. the current and the initial one)",
                               required=True)
    prompts: str | None = required("prompts JSONL (field `prompt`)")
    out: str | None = required("candidates JSONL to write")
    k: int = option(4, "outputs per prompt")
    temperatures: list[float] = option([1.0], "sampling temperatures, comma-separated")
    top_p: float = option(1.0, "nucleus sampling threshold")
    max_new_tokens: int = option(32, "response length limit")
    limit: int | None = option(None, "use only the first N prompts")
    seed: int = option(0, "random seed (source assignment and sampling)")
    device: str = option("auto", "cpu, cuda, cuda:N or auto")
    chat_template: str | None = option(None, "a Jinja chat template file that sets or replaces the models' "
                                       "tokenizers' (conversational prompts are rendered with it)")
    # active selection (data/selection.py)
    select: str = option("random", f"which prompts and candidates go to labelers: {', '.join(STRATEGIES)} "
                         "(docs/labeling.md 'Active selection')")
    random_share: float = option(0.2, "with --select other than random: share of the --limit prompts drawn "
                                 "uniformly (the only ones held out for evaluation)")
    select_from: int | None = option(None, "with --select: prompts sampled into the pool to choose --limit from "
                                     "(default: 2 x --limit)")
    pool_k: int | None = option(None, "with --select: candidates sampled per pooled prompt to choose --k from "
                                "(default: 2 x --k)")
    select_rm: str | None = option(None, "with --select uncertain|mixed: the reward model directory that scores "
                                   "the candidates")
    select_data: str | None = option(None, "with --select-rm: the rankings it was trained on (bootstrap heads on "
                                     "its features measure its uncertainty; without: margins near zero)")
    ensemble: int = option(5, "with --select-data: bootstrap heads in the ensemble")

    def check(self) -> None:
        check_strategy(self.select, self.random_share)
        if self.select != "random" and self.limit is None:
            raise UserError("config key 'limit': --select chooses --limit prompts from its pool; give --limit")
        if self.select in ("uncertain", "mixed") and not self.select_rm:
            raise UserError(f"config key 'select_rm': --select {self.select} needs a reward model to score the "
                            "candidates")
        check_at_least(self, 1, "select_from", "ensemble")
        check_at_least(self, self.k, "pool_k")
        if self.k < 2:
            raise UserError("config key 'k' must be at least 2 (labelers compare outputs)")
        if any(t <= 0 for t in self.temperatures) or not self.temperatures:
            raise UserError("config key 'temperatures' must be one or more values > 0")
        if not 0 < self.top_p <= 1:
            raise UserError("config key 'top_p' must be in (0, 1]")
        check_at_least(self, 1, "max_new_tokens", "limit")
        check_engine(self.rollout_engine, self.vllm_gpu_memory, self.rollout_server)


@dataclass
class SeedsOptions:
    """The output and seeds of a command that repeats its pipeline to give means and standard deviations."""
    out: str | None = required("output directory (report.json, report.html, plots, one folder per seed)")
    seeds: list[int] = option([0], "pipeline seeds, comma-separated; several give means and standard deviations")
    overwrite: bool = option(False, "replace an existing output directory")

    def check_seeds(self) -> None:
        if not self.seeds:
            raise UserError("config key 'seeds': give at least one seed")


@dataclass
class DemoConfig(StageOptions, RLOptions, SeedsOptions):
    out: str = default_of(SeedsOptions, "out", "runs/demo")
    preset: str | None = option(None, "pipeline size: micro (tests), tiny (the demo), small (default: the "
                                "--world's own preset, else tiny; without --world also the world's size)")
    world_seed: int = option(0, "seed of the toy world shared by every pipeline seed")
    world: str | None = option(None, "use this built world directory instead of building OUT/world")
    arch: str = option("gpt2", "base LM architecture: gpt2 or llama")
    methods: list[str] = option([], "also train these on the same SFT model and rankings and add `rlhf compare`'s "
                                "table to the report (dpo, rloo)")
    bf16: str = option("no", "train SFT, RM and PPO under bfloat16 autocast: yes, no, or auto (where this CPU has "
                       "native bf16); evaluation stays float32 (README: bf16 on CPUs)")

    def check(self) -> None:
        super().check()
        if self.preset is not None:
            check_preset(self.preset)
        if self.bf16 not in BF16_CHOICES:
            raise UserError(f"config key 'bf16' must be one of {', '.join(BF16_CHOICES)} (got {self.bf16!r})")
        self.check_seeds()
        self.check_rl()
        if set(self.methods) - {"dpo", "rloo"}:
            raise UserError("config key 'methods': the demo adds dpo and/or rloo (rlhf compare runs any method)")


@dataclass
class CompareConfig(StageOptions, RLOptions, SeedsOptions):
    RENAMED: ClassVar[dict[str, str]] = {"rl_steps": "ppo_steps", "rloo_k": "num_generations",
                                         "group_size": "num_generations"}

    world: str | None = required("built toy world (rlhf world build); its preset sizes the shared stages")
    methods: list[str] = option(list(DEFAULTS.methods), "methods, comma-separated, from: sft, bon, dpo, ppo, rloo, "
                                "grpo")
    trained_on: list[str] = option(list(DEFAULTS.trained_on), "what PPO, RLOO and GRPO are trained on, "
                                   "comma-separated: rm (the reward model), fn (--reward-fn), rm+fn (their sum)")
    reward_fn: list[str] = option(list(DEFAULTS.reward_fn), "reward functions of --trained-on fn and rm+fn "
                                  "(default: the toy world's verifier)")
    rl_lr: float | None = option(DEFAULTS.rl_lr, "PPO, RLOO and GRPO learning rate (default: the preset's)")
    num_generations: int = option(DEFAULTS.num_generations, "RLOO and GRPO: samples per prompt, k (a batch is "
                                  "batch/k prompts x k samples; TRL's name)")
    dpo_beta: float = option(DEFAULTS.dpo_beta, "β of DPO")
    dpo_lr: float = option(DEFAULTS.dpo_lr, "DPO learning rate")
    dpo_epochs: int = option(DEFAULTS.dpo_epochs, "DPO passes over the rankings")
    bon_n: int = option(DEFAULTS.bon_n, "best-of-n: largest n; its curve runs n = 1 … bon_n and its table row is "
                        "n = bon_n")
    curve_points: int = option(DEFAULTS.curve_points, "checkpoints saved along each DPO, PPO and RLOO run for the "
                               "gold-vs-√KL curve")
    eval_prompts: int | None = option(None, "held-out prompts evaluated (default: the preset's)")
    # the label-efficiency experiment (recipes/label_budget.py): another mode of compare, `rlhf loop` per arm
    label_budget: list[str] = option([], "instead of the methods: the label-efficiency experiment, one `rlhf loop` "
                                     "per arm and seed from the seed's SFT; arms, comma-separated: random, or a "
                                     f"--select strategy ({', '.join(s for s in STRATEGIES if s != 'random')}), "
                                     "with +judge for AI pre-labels (e.g. random,uncertain,uncertain+judge)")
    rounds: int = option(4, "with --label-budget: rounds of each loop (one curve point each)")
    prompts_per_round: int | None = option(None, "with --label-budget: prompts each round sends to labelers "
                                           "(default: a fifth of the preset's labeled prompts; tiny: 300)")
    label_judge: str = option(VERIFIER, "with --label-budget: the judge of the +judge arms, as `rlhf loop "
                              "--judge` (default: the world's verifier, an AI labeler; never world:gold, the truth)")
    label_judge_threshold: float = option(DEFAULT_THRESHOLD, "with --label-budget: `rlhf loop --judge-threshold` of "
                                          "the +judge arms (the judge is used when the lower end of its agreement's "
                                          "95-percent interval with people reaches this)")
    label_judge_confidence: float = option(0.5, "with --label-budget: `rlhf loop --judge-confidence` of the +judge "
                                           "arms (0.5: the verifier labels every item it can check; its ties, "
                                           "two different wrong answers, carry no pair)")
    resume: bool = option(False, "with --label-budget: continue the interrupted run in OUT (the same command plus "
                          "--resume): each seed's SFT and test set and each arm x seed x round that finished are "
                          "reused, a round stopped midway goes on from its last finished stage, nothing finished is "
                          "retrained, and the report is the uninterrupted run's; refused if any setting changed but "
                          "--seeds and --label-budget (seeds and arms may be added or left out) and --threads; on "
                          "an empty OUT it starts the run")

    def check(self) -> None:
        super().check()
        if self.label_budget:
            self.check_label_budget()
        else:
            given = [k for k in LABEL_BUDGET_KEYS if getattr(self, k) != default_of_field(CompareConfig, k)]
            if given:
                raise UserError(f"config key '{given[0]}' is a setting of --label-budget, which is not given")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise UserError(f"config key 'methods': unknown or none ({', '.join(unknown)}); "
                            f"choose from {', '.join(METHODS)}")
        self.check_seeds()
        self.check_rl()
        check_at_least(self, 1, "bon_n", "curve_points", "dpo_epochs")
        check_at_least(self, 2, "num_generations")
        if not self.trained_on or set(self.trained_on) - set(TRAINED_ON):
            raise UserError(f"config key 'trained_on': choose from {', '.join(TRAINED_ON)}")
        if self.eval_prompts is not None and self.eval_prompts < 0:
            raise UserError("config key 'eval_prompts' must be >= 0 (0: the preset's)")

    def check_label_budget(self) -> None:
        if len(set(self.label_budget)) != len(self.label_budget):
            raise UserError("config key 'label_budget': an arm is named twice")
        for arm in self.label_budget:
            parse_arm(arm)
        if self.label_judge.strip().lower() in ("world:gold", "gold"):
            raise UserError("config key 'label_judge': world:gold is the hidden truth, not a labeler; the "
                            "experiment would measure nothing (use the verifier or a reward model)")
        check_at_least(self, 1, "rounds", "prompts_per_round")
        if self.resume and self.overwrite:
            raise UserError("config keys 'resume' and 'overwrite': give one (--resume continues OUT's run, "
                            "--overwrite replaces it)")
        for key in ("label_judge_threshold", "label_judge_confidence"):
            if not 0 <= getattr(self, key) <= 1:
                raise UserError(f"config key '{key}' must be from 0 to 1")

    def settings(self) -> MethodSettings:
        """The settings `pipeline.train_method` and `pipeline.evaluate_methods` read."""
        tuples = ("methods", "trained_on", "reward_fn")
        shared = {f.name: getattr(self, f.name) for f in fields(MethodSettings) if f.name not in tuples}
        return MethodSettings(**{k: tuple(getattr(self, k)) for k in tuples}, **shared)


LABEL_BUDGET_KEYS = ("rounds", "prompts_per_round", "label_judge", "label_judge_threshold", "label_judge_confidence",
                     "resume")


def default_of_field(cls, name: str):
    return cls.__dataclass_fields__[name].default


def parse_arm(arm: str) -> tuple[str, bool]:
    """An arm of `rlhf compare --label-budget`: (--select strategy, with the judge's pre-labels or not)."""
    select, plus, judge = arm.partition("+")
    if select not in STRATEGIES or (plus and (judge != "judge" or select == "random")):
        raise UserError(f"config key 'label_budget': unknown arm {arm!r}; arms are random or a --select strategy "
                        f"({', '.join(s for s in STRATEGIES if s != 'random')}), with +judge for pre-labels "
                        "(not random+judge: the judge is measured on the random share of a --select)")
    return select, bool(plus)


@dataclass
class LoopConfig(DataOptions, StageOptions, RLOptions):
    out: str | None = required("loop directory (config.toml, one folder per round, report.json, report.html)")
    rounds: int = option(3, "rounds of sample → label → RM → PPO")
    world: str | None = option(None, "toy world directory (default: build the preset's world into OUT/world)")
    preset: str | None = option(None, "stage sizes, and the world's when the loop builds it: micro, tiny, small "
                                "(default: the --world's own preset, else tiny)")
    sft: str | None = option(None, "initial policy (default: SFT on the world's demonstrations into OUT/sft)")
    prompts_per_round: int | None = option(None, "prompts sampled for labeling each round (default: the preset's)")
    k: int = option(4, "outputs per prompt")
    temperatures: list[float] = option([0.7, 1.0], "sampling temperatures, comma-separated")
    labels: str | None = option(None, "where rankings come from: simulated (the toy world's labelers), app (people "
                                      "in the labeling app: the loop adds each round's items to one project and "
                                      "waits for them) or files (exports put into --labels-dir); default: "
                                      "simulated, or files when --labels-dir is given")
    labels_dir: str | None = option(None, "with --labels files: round r's rankings are LABELS_DIR/round-r.jsonl (an "
                                    "export of `rlhf label export --format rankings`)")
    labelers: int = option(5, "simulated labelers in the pool")
    per_item: int = option(2, "rankings per item, by different labelers (simulated ones, or people: the app "
                              "project's overlap)")
    min_coverage: float = option(1.0, "share of a round's items that need --per-item rankings before the loop "
                                      "trains on them")
    allow_partial: bool = option(False, "train on an export below --min-coverage instead of refusing it")
    db: str | None = option(None, "with --labels app: the app's database (default OUT/labels.db; or a "
                                  "postgresql:// URL)")
    project: str = option("loop", "with --labels app: the app project that holds every round's items")
    invite: list[str] = option([], "with --labels app: names of the people to invite, comma-separated (one link "
                                   "each, for every round)")
    public_url: str = option(DEFAULT_PUBLIC_URL, "with --labels app: where people reach the app (serve's "
                                                 "--public-url), for the printed links")
    wait: bool = option(True, "with --labels app: wait for a round's labels, polling the database (--no-wait: "
                              "exit with code 3 while a round waits)")
    poll_seconds: float = option(10.0, "with --labels app: seconds between looks at the database")
    redo_round: int | None = option(None, "redo round N from its labels on (after its export changed): read them "
                                          "again and retrain its RM and PPO and every later round's (their "
                                          "samples and labels stay)")
    checkpoint_every: int | None = option(None, "PPO checkpoint every N iterations, so a killed loop continues "
                                                "from it (default: the preset's save_every)")
    continue_policy: bool = option(False, "each round's PPO continues from the last round's policy (default: a "
                                   "fresh PPO run from the SFT policy against each new RM, so rounds differ only "
                                   "in their reward model's data)")
    seed: int = option(0, "random seed")
    rollout_engine: str = option("hf", "what samples the candidates and PPO's rollouts: hf, hf-static or vllm "
                                 "(README 'Rollout engines'; the evaluation samples with hf)")
    # active selection and AI pre-labels (data/selection.py, data/prelabels.py)
    select: str = option("random", f"which prompts and candidates of each round go to labelers: "
                         f"{', '.join(STRATEGIES)} (round 1, with no reward model yet: uncertain and mixed choose "
                         "by disagree)")
    random_share: float = option(0.2, "with --select other than random: share of each round's prompts drawn "
                                 "uniformly; the RM's held-out accuracy and the judge's agreement are measured on "
                                 "them only")
    pool_factor: int = option(2, "with --select other than random: each round samples this many times "
                              "--prompts-per-round prompts, and this many times --k candidates each, to choose from")
    ensemble: int = option(5, "with --select uncertain|mixed: bootstrap heads on the round's reward model")
    judge: str | None = option(None, "a judge that ranks every item first: a reward model directory, a reward "
                               "function (module:function, world:gold) or a causal LM directory; the items it is "
                               "confident on skip people (flagged labeler judge:NAME)")
    judge_threshold: float = option(DEFAULT_THRESHOLD, "the judge is used only when the lower end of the 95-percent "
                                    "interval of its agreement with people reaches this")
    judge_confidence: float = option(DEFAULT_CONFIDENCE, "items whose weakest pair the judge orders with "
                                     "probability below this go to people")
    judge_draft: str = option("hidden", "with --labels app and --judge: show the judge's ranking to labelers as a "
                              "starting draft (shown) or not (hidden; an admin can switch it in the app)")

    @property
    def source(self) -> str:
        return self.labels or ("files" if self.labels_dir else "simulated")

    def check(self) -> None:
        super().check()
        if self.preset is not None:
            check_preset(self.preset)
        check_source(self.source)
        if self.source == "files" and not self.labels_dir:
            raise UserError("config key 'labels_dir': --labels files reads the exports from --labels-dir")
        if self.labels_dir and self.source != "files":
            raise UserError(f"config key 'labels_dir' is for --labels files, not --labels {self.source}")
        check_engine(self.rollout_engine)
        if self.rounds < 1 or self.k < 2:
            raise UserError("config keys: need rounds >= 1 and k >= 2")
        if not self.temperatures or any(t <= 0 for t in self.temperatures):
            raise UserError("config key 'temperatures' must be one or more values > 0")
        if self.per_item < 1 or (self.source == "simulated" and not 1 <= self.per_item <= self.labelers):
            raise UserError("config keys: need labelers >= 1 and 1 <= per_item <= labelers")
        self.check_rl()
        if not 0 < self.min_coverage <= 1:
            raise UserError("config key 'min_coverage' must be above 0 and at most 1")
        if not self.poll_seconds > 0:
            raise UserError("config key 'poll_seconds' must be above 0")
        if self.redo_round is not None and not 1 <= self.redo_round <= self.rounds:
            raise UserError(f"config key 'redo_round' must be a round from 1 to {self.rounds}")
        check_at_least(self, 1, "prompts_per_round", "checkpoint_every")
        check_strategy(self.select, self.random_share)
        check_at_least(self, 1, "pool_factor", "ensemble")
        if self.judge and self.select == "random":
            raise UserError("config key 'judge': pre-labels need --select (uncertain, disagree or mixed): the judge is "
                            "measured on the random share, which --select random leaves no room beside")
        if self.judge_draft not in ("hidden", "shown"):
            raise UserError(f"config key 'judge_draft': expected hidden or shown, got {self.judge_draft!r}")
        for key in ("judge_threshold", "judge_confidence"):
            if not 0 <= getattr(self, key) <= 1:
                raise UserError(f"config key '{key}' must be from 0 to 1")


@dataclass
class ModelShape:
    layers: int = option(4, "transformer layers")
    dim: int = option(128, "model width d")
    heads: int = option(4, "attention heads")
    vocab: int = option(512, "vocabulary size (special tokens included)")
    arch: str = option("gpt2", "gpt2, or qwen2 (RoPE, grouped KV heads, biases on q/k/v, tied head: Qwen2.5's "
                       "layout; `bench/gpu_rollout.sh` runs the 0.5B shape)")
    kv_heads: int = option(0, "qwen2: key/value heads (0: as many as --heads)")


@dataclass
class BenchOptions:
    seed: int = option(0, "random seed (models, prompts, sampling)")
    threads: int = option(0, "torch CPU threads (0: leave torch's default)")
    json: bool = option(False, "print one JSON line instead of a sentence")
    profile: str | None = option(None, "write a pyinstrument text profile of the timed part to this file")


@dataclass
class BenchPPOConfig(BenchOptions, ModelShape, EngineOptions):
    prompt: int = option(16, "prompt tokens")
    resp: int = option(32, "response tokens (every response runs to full length)")
    batch: int = option(64, "episodes per PPO iteration (one minibatch per batch)")
    episodes: int = option(256, "timed episodes (a multiple of batch)")
    epochs: int = option(4, "PPO epochs over each batch")
    warmup: int = option(1, "untimed PPO iterations before the timed ones")
    minibatch: int = option(0, "episodes per gradient step (0: the whole batch)")
    device: str = option("cpu", "cpu, cuda, cuda:N or auto")
    bf16: bool = option(False, "forward passes under bfloat16 autocast, as `rlhf ppo --bf16` (weights and Adam "
                               "stay float32)")
    # Asynchronous rollouts (train/async_rollouts.py).
    async_rollouts: int = option(0, "as `rlhf ppo --async-rollouts K`: batch i+1 sampled by a snapshot of the "
                                 "policy while batch i trains (hf or hf-static)")


@dataclass
class BenchMatmulConfig(BenchOptions, ModelShape):
    rows: list[int] = option([64, 5120], "token positions per matmul: a decoding step's batch, a training "
                             "minibatch's batch × sequence length")
    seconds: float = option(0.5, "timed seconds per dtype and row count (best of 3 such runs)")


@dataclass
class BenchTrainConfig(BenchOptions, ModelShape):
    prompt: int = option(16, "prompt tokens")
    completion: int = option(32, "completion tokens (EOS appended)")
    examples: int = option(1024, "rankings (rm) or demonstrations (sft) in the data set")
    batch: int = option(32, "rankings (rm) or sequences (sft) per optimizer step")
    k: int = option(2, "rm: outputs per ranking (2: plain chosen/rejected pairs; K > 2: C(K,2) pairs each)")
    warmup: int = option(1, "untimed optimizer steps at the start")
    data: str | None = option(None, "use this JSONL (from `bench/run_all.py`) instead of making random data")
    model: str | None = option(None, "use this model directory instead of a random GPT-2 of the given shape")
    bf16: bool = option(False, "train under bfloat16 autocast, as `rlhf rm|sft --bf16`")
