"""Load and fault tests over HTTP on loopback: 20 labelers at once, SIGKILL mid-run (with answers resent on
purpose), expired leases.

Each runs against `rlhf label serve` in a subprocess, on SQLite and (with -m postgres) PostgreSQL.
Figures (submissions/s, p95 latency) are printed, never asserted: machines are noisy.
"""

from __future__ import annotations

import statistics
import threading
import time

import httpx
import pytest

from rlhfkit.label.commands import open_store, read_items
from tests.label.conftest import ApiLabeler, stand_in_answer, write_candidates

LABELERS, ITEMS, OVERLAP = 20, 50, 3
RUN_LIMIT_S = 240  # every loop below stops by itself well before this


def prepare(db_url: str, tmp_path, n_labelers=LABELERS, items=ITEMS, overlap=OVERLAP) -> list[str]:
    store = open_store(db_url, migrate=True)
    candidates = write_candidates(tmp_path / "c.jsonl", items, 4)
    store.import_items("load", "rank", overlap, read_items(str(candidates), "rank"))
    tokens = [store.invite("load", f"labeler{i:02d}") for i in range(n_labelers)]
    store.engine.dispose()
    return tokens


class Crew:
    """Labeler threads that lease and answer until their queue is empty, retrying through outages.

    A retry resends the *same* client_id, so an answer the server stored just before it died is
    stored once; `acked` holds every client_id the server acknowledged (201 or 200 duplicate). With
    `resend_every=n`, every n-th acknowledged answer is sent once more on purpose (a client that missed
    the reply): the server must answer 200 with the first receipt.
    """

    def __init__(self, url: str, tokens: list[str], resend_every: int = 0):
        self.url, self.tokens, self.resend_every = url, tokens, resend_every
        self.acked: dict[str, str] = {}  # client_id -> labeler
        self.resent = 0
        self.latency: list[float] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.deadline = time.monotonic() + RUN_LIMIT_S

    def _retry(self, fn):
        while time.monotonic() < self.deadline:
            try:
                return fn()
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code < 500:
                    raise
                time.sleep(0.2)  # the server is down or restarting
        raise TimeoutError("gave up retrying")

    def work(self, n: int) -> None:
        lab = ApiLabeler(self.url, self.tokens[n], timeout=30)
        answered = 0
        try:
            self._retry(lab.login)
            while time.monotonic() < self.deadline:
                task = self._retry(lab.next)
                if task is None:
                    return
                body = stand_in_answer(task, labeler_bias=n)

                def send(body=body):
                    t0 = time.perf_counter()
                    r = lab.submit(body)
                    r.raise_for_status()
                    return r, time.perf_counter() - t0

                r, dt = self._retry(send)
                receipt = r.json()
                with self.lock:
                    self.acked[receipt["client_id"]] = f"labeler{n:02d}"
                    self.latency.append(dt)
                answered += 1
                if self.resend_every and answered % self.resend_every == 0:
                    again, _ = self._retry(send)
                    if again.status_code != 200 or again.json() != receipt | {"duplicate": True}:
                        raise AssertionError(f"resent answer: {again.status_code} {again.text}, first {receipt}")
                    with self.lock:
                        self.resent += 1
        except Exception as exc:  # reported by the test, not lost in a thread
            with self.lock:
                self.errors.append(f"labeler{n:02d}: {exc!r}")
        finally:
            lab.close()

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.work, args=(n,), daemon=True) for n in range(len(self.tokens))]
        for t in threads:
            t.start()
        return threads


def check_invariants(db_url: str, crew: Crew) -> None:
    store = open_store(db_url)
    counts = store.item_answer_counts("load")
    rows = store.submissions("load")
    store.engine.dispose()
    assert not crew.errors, crew.errors[:3]
    assert len(counts) == ITEMS
    assert all(n == OVERLAP and distinct == OVERLAP for _, n, distinct in counts), counts
    stored = {r["client_id"] for r in rows}
    assert set(crew.acked) <= stored, "an acknowledged submission was lost"
    assert len(rows) == len(stored) == ITEMS * OVERLAP, "a submission was stored twice"


def report(name: str, crew: Crew, wall: float) -> None:
    lat = sorted(crew.latency)
    p95 = lat[int(0.95 * (len(lat) - 1))] * 1000
    print(f"\n[{name}] {len(crew.acked)} submissions by {len(crew.tokens)} labelers in {wall:.2f}s: "
          f"{len(crew.acked) / wall:.1f} submissions/s, submit latency p50 {statistics.median(lat) * 1000:.0f} ms, "
          f"p95 {p95:.0f} ms")


def test_twenty_labelers_fill_every_item_exactly_k_times(db_url, tmp_path, live_server):
    tokens = prepare(db_url, tmp_path)
    server = live_server(db_url)
    crew = Crew(server.url, tokens)
    t0 = time.perf_counter()
    for t in crew.start():
        t.join(RUN_LIMIT_S)
    wall = time.perf_counter() - t0
    report(f"load {db_url.split(':')[0]}", crew, wall)
    check_invariants(db_url, crew)


def test_sigkill_mid_run_loses_no_acknowledged_submission(db_url, tmp_path, live_server):
    tokens = prepare(db_url, tmp_path)
    server = live_server(db_url)
    crew = Crew(server.url, tokens, resend_every=4)
    t0 = time.perf_counter()
    threads = crew.start()
    while len(crew.acked) < ITEMS * OVERLAP // 3 and time.monotonic() < crew.deadline:
        time.sleep(0.01)
    acked_at_kill = len(crew.acked)
    server.kill()  # SIGKILL while 20 labelers are mid-request
    time.sleep(0.5)
    server.start()  # same port, same database
    for t in threads:
        t.join(RUN_LIMIT_S)
    wall = time.perf_counter() - t0
    report(f"sigkill {db_url.split(':')[0]} (killed after {acked_at_kill} acks; {crew.resent} resent)", crew, wall)
    check_invariants(db_url, crew)
    assert crew.resent > 0  # check_invariants saw each of them stored once


def test_an_expired_lease_returns_the_item_over_http(db_url, tmp_path, live_server):
    tokens = prepare(db_url, tmp_path, n_labelers=2, items=1, overlap=1)
    server = live_server(db_url, lease_seconds=1)
    ann, bob = ApiLabeler(server.url, tokens[0]), ApiLabeler(server.url, tokens[1])
    ann.login()
    bob.login()
    task = ann.next()
    assert bob.next() is None
    time.sleep(1.3)
    again = bob.next()
    assert again is not None and again["item_id"] == task["item_id"]
    late = ann.submit(stand_in_answer(task))
    assert late.status_code == 409 and "expired" in late.json()["detail"]
    assert bob.submit(stand_in_answer(again)).status_code == 201
    for lab in (ann, bob):
        lab.close()


def test_bad_requests_get_clear_4xx(db_url, tmp_path, live_server):
    tokens = prepare(db_url, tmp_path, n_labelers=1, items=1, overlap=1)
    server = live_server(db_url)
    lab = ApiLabeler(server.url, tokens[0])
    lab.login()
    task = lab.next()
    assert lab.submit({"nonsense": True}).status_code == 422
    r = lab.submit(stand_in_answer(task) | {"likert": [9, 9, 9, 9]})
    assert r.status_code == 422 and "1 to 7" in r.json()["detail"]
    assert lab.submit(stand_in_answer(task) | {"assignment_id": 999999}).status_code == 404
    r = lab.client.post("/api/submissions", content=b"{not json", headers={"X-CSRF-Token": lab.csrf,
                                                                           "Content-Type": "application/json"})
    assert r.status_code == 422
    lab.close()


@pytest.fixture(autouse=True)
def _quiet_httpx(caplog):
    caplog.set_level("WARNING", logger="httpx")
