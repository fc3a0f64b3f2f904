"""End to end: import candidates -> labelers answer over HTTP -> export -> the data trains a reward model."""

import json
import math
import random
import uuid

import httpx
import pytest
from sqlalchemy import text

from rlhfkit.cli import main
from rlhfkit.data.jsonl import read_jsonl, write_jsonl
from rlhfkit.data.schemas import pair_record, ranking_record
from rlhfkit.label.commands import StatsConfig, open_store, stats
from rlhfkit.models.loading import load_tokenizer
from rlhfkit.models.scalar import ScalarModel, score_texts
from rlhfkit.world.build import World
from rlhfkit.world.corpus import expert_response, web_response
from rlhfkit.world.tasks import parse_prompt
from tests.label.conftest import ApiLabeler, invite_login, stand_in_answer, write_candidates


def label_over_http(tmp_path, live_server, mode="rank", k=4, items=6, overlap=3, labelers=4):
    db = str(tmp_path / "labels.db")
    cands = write_candidates(tmp_path / "cands.jsonl", items, k)
    assert main(["label", "import", "--db", db, "--project", "e2e", "--mode", mode, "--overlap", str(overlap),
                 str(cands)]) == 0
    store = open_store(db)
    tokens = [store.invite("e2e", f"sim{i}") for i in range(labelers)]
    admin = store.invite("e2e", "boss", "admin")
    server = live_server(db)
    for n, token in enumerate(tokens):  # one after another: deterministic
        lab = ApiLabeler(server.url, token)
        lab.login()
        while (task := lab.next()) is not None:
            assert lab.submit(stand_in_answer(task, labeler_bias=n)).status_code == 201
        lab.close()
    return db, server, admin


def test_import_label_over_http_export_validates(tmp_path, live_server):
    db, server, admin = label_over_http(tmp_path, live_server)
    out = tmp_path / "rankings.jsonl"
    assert main(["label", "export", "--db", db, "--project", "e2e", "--format", "rankings", "--out", str(out)]) == 0
    rankings = read_jsonl(out, ranking_record)
    assert len(rankings) == 6 * 3 and all(len(r["likert"]) == 4 and len(r["flags"]) == 4 for r in rankings)
    with httpx.Client(base_url=server.url) as boss:
        assert invite_login(boss, admin).status_code == 303
        pairs = [line for line in boss.get("/api/projects/e2e/export?format=pairs").text.splitlines() if line]
        stats = boss.get("/api/projects/e2e/stats").json()
    assert len(pairs) == 18 * 5  # K=4 with one tie: 5 ordered pairs per ranking
    assert stats["complete"] == 6 and stats["agreement"]["pairs_compared"] > 0
    # Stand-in labelers 0, 2, 3 agree exactly; labeler 1 swaps its top two.
    assert 0.5 < stats["agreement"]["pairwise_agreement"] < 1


def test_blind_pairwise_evaluation_reports_win_rates(tmp_path, live_server):
    db, _, _ = label_over_http(tmp_path, live_server, mode="pairwise", k=2, items=4, overlap=3, labelers=3)
    out = tmp_path / "pairs.jsonl"
    assert main(["label", "export", "--db", db, "--project", "e2e", "--format", "pairs", "--out", str(out)]) == 0
    assert len(read_jsonl(out, pair_record)) == 4 * 3  # no "equal": every answer is one pair
    st = stats(StatsConfig(db=db, project="e2e", json=True))
    # Output 1 ("ppo") is longer, so the stand-in labelers 0 and 2 prefer it and labeler 1 does not.
    assert st["win_rates"]["per_source"]["ppo"]["win_rate"] == pytest.approx(2 / 3)


# ------------------------------------------------------------------- the toy world's labelers, then `rlhf rm`

ITEMS, OVERLAP, LABELERS = 12, 3, 4  # small: the test stays in `make test`


def world_candidates(world: World, path, n_items: int, k: int = 4, seed: int = 0):
    """Candidates (docs/design.md §2) on the world's training prompts: each output slot is the world's expert (often
    right) or a raw-web answer (often wrong, rude or never ending, `finished` false), as `rlhf sample` would
    write them for a mix of policies."""
    rng = random.Random(seed)
    records = []
    for n, prompt in enumerate(world.prompts("train")[:n_items]):
        task = parse_prompt(prompt)
        outputs = []
        for j in range(k):
            if j % 2 == 0:
                outputs.append({"text": expert_response(task, rng), "source": "expert", "finished": True})
            else:
                words, ended = web_response(task, rng, world.response_limit)
                outputs.append({"text": " ".join(words[:world.response_limit]), "source": "web", "finished": ended})
        records.append({"id": f"w{n:03d}", "prompt": prompt, "completions": outputs})
    write_jsonl(path, records)
    return {r["id"]: r for r in records}


def world_answer(labeler, task: dict, item: dict) -> tuple[dict, dict]:
    """(the labeler's rankings record, the API body that sends it). The labeler judges the texts the app
    served, by the candidate index the app gave each; whether an output ended is known from the file."""
    shown = {o["index"]: o["text"] for o in task["outputs"]}
    texts = [shown[i] for i in range(len(shown))]
    finished = [c["finished"] for c in item["completions"]]
    record = labeler.label(task["item_id"], task["prompt"], texts, finished)
    body = {"client_id": str(uuid.uuid4()), "assignment_id": task["assignment_id"], "kind": "rank",
            "elapsed_ms": 2000, "ranking": record["ranking"], "likert": record["likert"], "flags": record["flags"]}
    return record, body



def test_rlhf_rm_trains_on_the_export(micro_world, tmp_path, live_server):
    world = World(micro_world)
    items = world_candidates(world, tmp_path / "cands.jsonl", ITEMS)
    db = str(tmp_path / "labels.db")
    assert main(["label", "import", "--db", db, "--project", "world", "--mode", "rank", "--overlap", str(OVERLAP),
                 str(tmp_path / "cands.jsonl")]) == 0
    store = open_store(db)
    labelers = world.labelers(LABELERS, seed=0)
    tokens = {lab.name: store.invite("world", lab.name) for lab in labelers}
    with store.engine.connect() as conn:  # labelers see an item's public id; the export has the imported one
        imported = dict(conn.execute(text("SELECT public_id, ext_id FROM item")).all())
    store.engine.dispose()
    server = live_server(db)
    sent = {}  # (imported item id, labeler) -> the record the labeler meant
    for labeler in labelers:  # one after another: deterministic
        client = ApiLabeler(server.url, tokens[labeler.name])
        client.login()
        while (task := client.next()) is not None:
            item = items[imported[task["item_id"]]]
            assert task["prompt"] == item["prompt"]
            assert sorted(o["text"] for o in task["outputs"]) == sorted(c["text"] for c in item["completions"])
            record, body = world_answer(labeler, task, item)
            assert client.submit(body).status_code == 201
            sent[(item["id"], labeler.name)] = record
        client.close()
    assert len(sent) == ITEMS * OVERLAP

    export = tmp_path / "export.jsonl"
    assert main(["label", "export", "--db", db, "--project", "world", "--format", "rankings",
                 "--out", str(export)]) == 0
    rankings = read_jsonl(export, ranking_record)
    assert len(rankings) == ITEMS * OVERLAP
    for r in rankings:  # what the labeler meant is what the export says
        meant = sent[(r["id"], r["labeler"])]
        item = items[r["id"]]
        assert (r["prompt"], r["completions"]) == (item["prompt"], [c["text"] for c in item["completions"]])
        assert (r["ranking"], r["likert"], r["flags"]) == (meant["ranking"], meant["likert"], meant["flags"])
        assert r["finished"] == [c["finished"] for c in item["completions"]]
    assert not all(f for r in rankings for f in r["finished"]), "no unfinished output: the EOS flag went untested"

    out = tmp_path / "rm"
    assert main(["rm", "--model", str(micro_world / "base"), "--data", str(export), "--out", str(out),
                 "--batch-size", "4", "--eval-fraction", "0.3", "--world", str(micro_world)]) == 0
    result = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert result["heldout_rankings"] > 0  # whole prompts held out: all OVERLAP labelers' rankings of them
    assert result["train_rankings"] + result["heldout_rankings"] == ITEMS * OVERLAP
    assert result["heldout_rankings"] % OVERLAP == 0
    assert result["steps"] == -(-result["train_rankings"] // 4)
    assert 0 <= result["heldout_accuracy"] <= 1 and 0 <= result["noise_ceiling"] <= 1
    rm = ScalarModel.from_pretrained(out).eval()
    scores = score_texts(rm, load_tokenizer(out), [r["prompt"] for r in rankings[:4] for _ in r["completions"]],
                         [c for r in rankings[:4] for c in r["completions"]])
    assert all(math.isfinite(x) for x in scores) and len(set(scores)) > 1
