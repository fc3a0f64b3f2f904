"""`rlhf eval ...`: measurements on held-out prompts of the toy world, and of a reward model on any labels.

Evaluation never imports the toy world: its gold reward comes as the judge `world:gold` and its directory reader
as `WORLD`, both loaded by name through the reward functions' loader (`rewards/functions.load_object`)."""

from __future__ import annotations

import json
from pathlib import Path

from rlhfkit.data.formats import read_prompts
from rlhfkit.data.jsonl import check_writable
from rlhfkit.data.pairs import ordered_groups, preference_groups, read_preference_records
from rlhfkit.engines.core import make_engine
from rlhfkit.errors import UserError
from rlhfkit.eval.bon import best_of_n, judge_chosen
from rlhfkit.eval.configs import (
    BON_NEW_TOKENS,
    EvalBoNConfig,
    EvalGoldConfig,
    EvalRMConfig,
    EvalWinrateConfig,
    SamplingOptions,
)
from rlhfkit.eval.policy import load_policy, sample_and_score
from rlhfkit.models.loading import (
    check_causal_lm,
    check_model_dir,
    check_reward_dir,
    load_tokenizer,
    pick_device,
    position_limit,
)
from rlhfkit.models.precision import run_in_bf16
from rlhfkit.models.reward_model import RewardModel
from rlhfkit.models.scalar import ScalarModel
from rlhfkit.rewards.accuracy import (
    HELDOUT_FILE,
    gold_measurements,
    labeler_agreement,
    pairwise_accuracy,
    tokenize_groups,
)
from rlhfkit.rewards.combine import Rewards
from rlhfkit.rewards.functions import load_object, load_reward_function
from rlhfkit.rewards.sources import load_judge, world_judge
from rlhfkit.runtime.optim import set_threads
from rlhfkit.stats import mean_and_se, win_rate

WORLD = "rlhfkit.world.build:World"  # the toy world's directory: held-out prompts, response limit


def open_world(path: str):
    """`--world DIR`: the built toy world (one line if DIR is not one), with its gold judge's `reward` as `gold`."""
    world = load_object(WORLD, "--world")(path)
    return world, world_judge(path).reward


def heldout(world, limit: int | None) -> list[str]:
    prompts = world.prompts("heldout")
    return prompts[:limit] if limit else prompts


def policy_engine(path, cfg: SamplingOptions | EvalBoNConfig, seed: int, device="cpu"):
    """The policy at `path` on `device` (under bf16 autocast with --bf16), its tokenizer and the rollout engine that
    samples it (vllm serves `path` as it is)."""
    model, tokenizer = load_policy(path, device)
    run_in_bf16(cfg.bf16, model)
    engine = make_engine(cfg.rollout_engine, model, tokenizer, max_len=position_limit(model) or 4096, served=path,
                         gpu_memory=cfg.vllm_gpu_memory, seed=seed, server=cfg.rollout_server)
    return model, tokenizer, engine


def score_policy(path, world, gold, cfg: SamplingOptions, prompts: list[str]):
    model, tokenizer, engine = policy_engine(path, cfg, cfg.seed)
    scored = sample_and_score(model, tokenizer, prompts, temperature=cfg.temperature, top_p=cfg.top_p,
                              max_new_tokens=cfg.max_new_tokens or world.response_limit, seed=cfg.seed, engine=engine,
                              gold=gold)
    engine.close()
    return scored


def _write_json(path: str | None, result: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def eval_gold(cfg: EvalGoldConfig) -> dict:
    cfg.check()
    if cfg.json_out:
        check_writable(cfg.json_out)
    world, gold = open_world(cfg.world)
    check_model_dir(cfg.model)
    scored = score_policy(cfg.model, world, gold, cfg, heldout(world, cfg.limit))
    mean, se = mean_and_se(scored.totals)
    result = {"model": cfg.model, **scored.summary(), "gold_se": round(se, 4), "by_family": scored.by_family()}
    print(f"gold reward of {cfg.model} on {result['n']} held-out prompts: {mean:.3f} ± {se:.3f}")
    for key in ("gold_correctness", "gold_concision", "gold_termination", "gold_harmlessness", "eos_rate",
                "length"):
        print(f"  {key:<18} {result[key]:>8}")
    print("  by family: " + ", ".join(f"{k} {v}" for k, v in result["by_family"].items()))
    _write_json(cfg.json_out, result)
    return result


def eval_winrate(cfg: EvalWinrateConfig) -> dict:
    cfg.check()
    if cfg.json_out:
        check_writable(cfg.json_out)
    world, gold = open_world(cfg.world)
    check_model_dir(cfg.a)
    check_model_dir(cfg.b)
    prompts = heldout(world, cfg.limit)
    a = score_policy(cfg.a, world, gold, cfg, prompts)
    b = score_policy(cfg.b, world, gold, cfg, prompts)
    result = {"a": cfg.a, "b": cfg.b, **win_rate(a.totals, b.totals, seed=cfg.seed),
              "gold_a": a.summary()["gold"], "gold_b": b.summary()["gold"]}
    print(f"win rate of A over B by gold reward: {result['rate']:.3f} "
          f"(95% CI {result['ci_low']:.3f}–{result['ci_high']:.3f}, n={result['n']}); "
          f"mean gold A {result['gold_a']:.3f}, B {result['gold_b']:.3f}")
    _write_json(cfg.json_out, result)
    return result


def eval_rm(cfg: EvalRMConfig) -> dict:
    cfg.check()
    device = pick_device(cfg.device)
    set_threads(cfg.threads)
    data = cfg.data or str(Path(cfg.rm) / HELDOUT_FILE)
    if cfg.json_out:
        check_writable(cfg.json_out)
    check_model_dir(cfg.rm, "reward model")
    check_reward_dir(cfg.rm)
    groups = preference_groups(*read_preference_records(data, cfg, command="eval rm"))
    world, gold = open_world(cfg.world) if cfg.world else (None, None)
    tokenizer = load_tokenizer(cfg.rm)  # any reward model with its tokenizer (models/scalar.py)
    model = ScalarModel.from_pretrained(cfg.rm).eval().to(device)
    run_in_bf16(cfg.bf16, model)
    measured = pairwise_accuracy(model, tokenize_groups(tokenizer, ordered_groups(groups), 256),
                                 tokenizer.pad_token_id, packing=cfg.packing)
    result = {"rm": cfg.rm, "data": data, "heldout_accuracy": round(measured["accuracy"], 4),
              "heldout_loss": round(measured["loss"], 4), "n_pairs": measured["n_pairs"],
              "n_rankings": measured["n_rankings"], **labeler_agreement(groups)}
    if world is not None:
        result |= gold_measurements(model, tokenizer, groups, gold, cfg.packing)
    print(f"reward model {cfg.rm} on {data}:")
    print(f"  held-out accuracy  {result['heldout_accuracy']:.3f}  ({result['n_pairs']} comparisons, "
          f"{result['n_rankings']} rankings)")
    if world is not None:
        print(f"  noise ceiling      {result['noise_ceiling']:.3f}  (gold ordering on the same comparisons)")
        print(f"  Spearman with gold {result['spearman_gold']:.3f}  ({result['spearman_samples']} outputs)")
        for kind, title in (("by_component", "deciding gold component"), ("by_family", "family")):
            print(f"  {title:<24} {'pairs':>6} {'RM acc':>7} {'ceiling':>8}")
            for name, row in result[kind].items():
                print(f"    {name:<22} {row['n_pairs']:>6} {row['rm_accuracy']:>7.3f} {row['noise_ceiling']:>8.3f}")
    if result["labeler_agreement"] is not None:
        print(f"  labeler agreement  {result['labeler_agreement']:.3f}  ({result['agreement_pairs']} pairs on "
              f"{result['agreement_items']} items ranked twice)")
    _write_json(cfg.json_out, result)
    return result


def eval_bon(cfg: EvalBoNConfig) -> dict:
    cfg.check()
    cfg.check_rewards()  # not in check(): a config of defaults passes check(), as every command's does
    if not cfg.world and not cfg.prompts:
        raise UserError("give --world (its held-out prompts, picks scored by gold too) or --prompts (your prompts, "
                        "picks scored by the reward alone)")
    if cfg.json_out:
        check_writable(cfg.json_out)
    device = pick_device(cfg.device)
    set_threads(cfg.threads)
    world, gold = open_world(cfg.world) if cfg.world else (None, None)
    if cfg.prompts:
        prompts, source = [r["prompt"] for r in read_prompts(cfg.prompts)][:cfg.limit], cfg.prompts
    else:
        prompts, source = heldout(world, cfg.limit), "held-out prompts"
    check_model_dir(cfg.policy)
    check_causal_lm(cfg.policy)
    if cfg.reward:
        check_model_dir(cfg.reward, "reward model")
        check_reward_dir(cfg.reward)
    functions = [load_reward_function(spec) for spec in cfg.reward_fn]
    judges = [load_judge(spec, load_model=lambda path: path) for spec in cfg.judge]  # each loads (one line if not)
    model, tokenizer, engine = policy_engine(cfg.policy, cfg, cfg.seed, device)

    def load_rm(path: str) -> RewardModel:  # any RM; its own tokenizer if it has one
        rm = RewardModel.load(path, tokenizer, device, packing=cfg.packing)
        run_in_bf16(cfg.bf16, rm.model)
        return rm
    judges = [load_judge(spec, load_model=load_rm) for spec in cfg.judge]
    reward = load_rm(cfg.reward) if cfg.reward else None
    if functions:
        reward = Rewards(reward, cfg.reward_model_weight, functions, tuple(cfg.reward_fn_weights))
    limit = cfg.max_new_tokens or (world.response_limit if world is not None else BON_NEW_TOKENS)
    bon = best_of_n(model, tokenizer, reward, prompts, n=cfg.n, temperature=cfg.temperature, max_new_tokens=limit,
                    seed=cfg.seed, gold=gold, missing_eos_penalty=cfg.missing_eos_penalty, engine=engine)
    engine.close()
    picker = " + ".join(([cfg.reward] if cfg.reward else []) + [f.name for f in functions])
    result = {"policy": cfg.policy, "reward": cfg.reward, "reward_fn": cfg.reward_fn, "prompts": len(bon.prompts),
              "curve": bon.curve(_powers(cfg.n))}
    print(f"best-of-n of {cfg.policy} by {picker} on {len(bon.prompts)} {source}:")
    print("      n   KL_BoN     reward" + ("   gold" if gold else ""))
    for row in result["curve"]:
        print(f"  {row['n']:>5}  {row['kl']:>7.3f}  {row['rm']:>9.3f}" + (f"  {row['gold']:>6.3f}" if gold else ""))
    if judges:
        result["judges"] = {}
        for spec, judge in zip(cfg.judge, judges):
            result["judges"][spec] = judge_chosen(bon, cfg.n, judge)
            print(f"  judge {spec} of the n = {cfg.n} picks: " +
                  ", ".join(f"{k} {v:.3f}" for k, v in result["judges"][spec].items()))
    _write_json(cfg.json_out, result)
    return result


def _powers(n: int) -> list[int]:
    out, k = [], 1
    while k <= n:
        out.append(k)
        k *= 2
    return out if out[-1] == n else out + [n]
