"""Run `rlhf loop --labels app` the way a team would, with two scripted people standing in for labelers.

    python scripts/loop_with_people.py --out /tmp/walkthrough [--preset micro] [--rounds 2] [--prompts 12]

What it does, as the README's walkthrough describes it:
  1. starts `rlhf loop --labels app --invite ann,bob` and reads the runbook it prints (the invite links);
  2. starts `rlhf label serve` on the loop's database, as the runbook says;
  3. ann and bob log in with their links over the JSON API and rank every item they are served, round after
     round, with the same links; each ranks as one of the toy world's simulated people would (a noisy view of the
     hidden gold reward, docs/design.md §3), thinking `--think` seconds per item;
  4. waits for the loop to finish and prints its output, each line with the wall time.

The loop's own output is in OUT/loop.log, the server's in OUT/serve.log, the labelers' answers in OUT/people.log.
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

from rlhfkit.world.build import World

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rlhf(*args) -> list[str]:
    return [sys.executable, "-m", "rlhfkit.cli", *map(str, args)]


class Person(threading.Thread):
    """One labeler: logs in with the invite link, then ranks whatever the app serves until told to stop."""

    def __init__(self, name: str, link: str, judge, think_s: float, log, stop: threading.Event):
        super().__init__(daemon=True)
        self.name, self.link, self.judge, self.think_s, self.log, self.stop = name, link, judge, think_s, log, stop
        self.answered = 0

    def run(self) -> None:
        base, token = self.link.split("/invite/")
        with httpx.Client(base_url=base, timeout=30) as api:
            csrf = api.post("/api/session", json={"token": token}).raise_for_status().json()["csrf_token"]
            headers = {"X-CSRF-Token": csrf}
            while not self.stop.is_set():
                task = api.post("/api/next", headers=headers).raise_for_status().json()["task"]
                if task is None:  # nothing to label now: the loop is training, or sampling the next round
                    time.sleep(1)
                    continue
                outputs = sorted(task["outputs"], key=lambda o: o["index"])
                meant = self.judge.label(task["item_id"], task["prompt"], [o["text"] for o in outputs],
                                         [o["finished"] for o in outputs])
                time.sleep(self.think_s)
                body = {"client_id": str(uuid.uuid4()), "assignment_id": task["assignment_id"], "kind": "rank",
                        "elapsed_ms": int(self.think_s * 1000), "ranking": meant["ranking"],
                        "likert": meant["likert"], "flags": meant["flags"]}
                api.post("/api/submissions", json=body, headers=headers).raise_for_status()
                self.answered += 1
                print(f"{time.strftime('%H:%M:%S')} {self.name} ranked {task['item_id']}: "
                      f"{meant['ranking']}", file=self.log, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--preset", default="micro")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=12, help="prompts per round")
    parser.add_argument("--ppo-steps", type=int, default=None)
    parser.add_argument("--think", type=float, default=0.5, help="seconds each person spends on an item")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    loop_cmd = rlhf("loop", "--out", out / "loop", "--preset", args.preset, "--rounds", args.rounds,
                    "--prompts-per-round", args.prompts, "--labels", "app", "--invite", "ann,bob",
                    "--public-url", url, "--poll-seconds", 2,
                    *(["--ppo-steps", args.ppo_steps] if args.ppo_steps else []))
    print("$", " ".join(loop_cmd[2:]).replace("rlhfkit.cli", "rlhf"), flush=True)
    t0 = time.time()
    loop_log = (out / "loop.log").open("w")
    loop = subprocess.Popen(loop_cmd, stdout=subprocess.PIPE, stderr=loop_log, text=True, bufsize=1)
    links, server, people, stop = {}, None, [], threading.Event()
    people_log = (out / "people.log").open("w")
    try:
        for line in loop.stdout:
            loop_log.write(line)
            loop_log.flush()
            print(f"{time.time() - t0:7.1f}s | {line}", end="", flush=True)
            if m := re.match(r"^ +(ann|bob): (http\S+/invite/\S+)$", line):
                links[m.group(1)] = m.group(2)
            if server is None and line.strip().startswith("4. The loop waits"):
                server = subprocess.Popen(rlhf("label", "serve", "--db", out / "loop" / "labels.db", "--port", port),
                                          stdout=(out / "serve.log").open("w"), stderr=subprocess.STDOUT)
                wait_for_server(url)
                world = World(out / "loop" / "world")
                for name, judge in zip(("ann", "bob"), world.labelers(2, seed=0)):
                    people.append(Person(name, links[name], judge, args.think, people_log, stop))
                    people[-1].start()
        code = loop.wait()
    finally:
        stop.set()
        for process in (loop, server):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(10)
    for p in people:
        p.join(10)
    answered = ", ".join(f"{p.name} {p.answered}" for p in people)
    print(f"{time.time() - t0:7.1f}s | loop exited with code {code}; rankings given: {answered}")
    return code


def wait_for_server(url: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/openapi.json", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"the labeling app did not start on {url}")


if __name__ == "__main__":
    sys.exit(main())
