"""LLM throughput against its bound: pooled keys under global limits, 2 assess processes.

    .venv/bin/python bench/llm.py [--scenario NAME ...] [--seconds 122] [--warmup 61]

Each scenario starts its own redis-server, the project's LLM simulator (latency drawn
uniformly from L_min..L_max, each key limited to R requests a minute, answering 429
beyond it) and P real assess worker processes with T threads each, sharing K keys
through the key pool. A feeder sends real assess tasks: conflicts to verify, each shown
in one frame (serious ones on llm.high, potential ones on llm.low). Over the window it
reports verdicts per second against the bound for one conflict a call

    min(P * T / mean latency, K * R / 60)

as a ratio, the requests the simulator refused as over a key's limit (429: a pool
that holds the limits causes none), the simulator's concurrent peak, the assess
processes' resident memory and Redis's CPU. A key-limited window should span whole
minutes (the limit is per minute): the defaults are a 61 s warm-up and a 122 s window.

keys, concurrency: llm.high kept full; the bound is the keys' rate, or the threads'.
overload: twice the bound at a steady rate, a fifth of it to llm.high; the
  high-priority wait (queued by aggregate as the conflict opens, to sent) p50 and p95, the
  low work shed and the deepest the queues got.
unbatched, batched: 4 conflicts at a time at 0.75 of the bound, one a call and
  up to 4 a call (LLM_BATCH_SIZE=4): calls, tokens per verdict and turnaround
  (queued to verdict); batched-one-process: the same with one process of 200 threads.
concurrency-gevent, one-process-400[-gevent]: the assess pool, threads or gevent.
batched-full: llm.high kept full, 4 conflicts a call: verdicts/s past the bound.
batched-per-frame: as batched, each 4 in one assess_many task (as aggregate sends the
  conflicts it queues together with LLM_BATCH_SIZE above 1), so one process batches them.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import requests
from celery import Celery
from harness import CLI, ROOT, bench_env, cpu_seconds, free_port, process, redis_server, rss_mib

from trafficrisk.messages import (
    AssessRequest,
    Box,
    ConflictChange,
    ConflictEvent,
    ConflictSeverity,
    EncounterFrame,
)
from trafficrisk.queues import LLM_HIGH_QUEUE, LLM_LOW_QUEUE
from trafficrisk.workers.store import Store, llm_turnarounds_key, llm_waits_key


@dataclass(frozen=True)
class Scenario:
    name: str
    keys: int
    rpm: int
    latency_min: float
    latency_max: float
    processes: int = 2
    threads: int = 100
    offered: float = 0.0  # offered load, times the bound, at a steady rate; 0: keep llm.high full
    high_share: float = 1.0  # of the offered load, the part sent to llm.high
    high_reserve: float = 0.1
    low_max_age_s: float = 30.0
    frame_groups: int = 1  # groups offered together, as the groups of one frame
    batch: int = 1  # LLM_BATCH_SIZE
    batch_wait_ms: int = 200
    pool: str = "threads"  # the assess workers' Celery pool
    per_frame: bool = False  # a frame's groups in one assess_many task, as detect sends them when batching

    @property
    def high_every(self) -> int:
        """Every how many tasks one is high priority (integers: float steps drift)."""
        return round(1 / self.high_share)

    @property
    def bound(self) -> float:
        """Verdicts per second one group per call can reach: threads over latency, or the keys' rate."""
        mean_latency = (self.latency_min + self.latency_max) / 2
        return min(self.processes * self.threads / mean_latency, self.keys * self.rpm / 60)


SCENARIOS = {
    # 4 keys at 120 a minute: 8 verdicts/s, far below what 200 threads could do.
    "keys": Scenario("keys", keys=4, rpm=120, latency_min=2, latency_max=4),
    # 40 keys at 6000 a minute: 4000/s of key room; 200 threads at 3 s mean give 66.7/s.
    "concurrency": Scenario("concurrency", keys=40, rpm=6000, latency_min=2, latency_max=4),
    # The same with gevent's greenlets in place of threads; and 400 in flight in one process each way.
    "concurrency-gevent": Scenario("concurrency-gevent", keys=40, rpm=6000, latency_min=2, latency_max=4,
                                   pool="gevent"),
    "one-process-400": Scenario("one-process-400", keys=40, rpm=6000, latency_min=2, latency_max=4,
                                processes=1, threads=400),
    "one-process-400-gevent": Scenario("one-process-400-gevent", keys=40, rpm=6000, latency_min=2,
                                       latency_max=4, processes=1, threads=400, pool="gevent"),
    # Twice what the 4 keys allow, a fifth of it high priority (0.4 of the bound): half of
    # each key is reserved for it; low work older than 10 s is shed.
    "overload": Scenario("overload", keys=4, rpm=120, latency_min=2, latency_max=4, offered=2.0,
                         high_share=0.2, high_reserve=0.5, low_max_age_s=10),
    # Frames of 4 groups at 0.75 of the keys' bound, one group a call, then 4 groups a call.
    "unbatched": Scenario("unbatched", keys=4, rpm=120, latency_min=2, latency_max=4, offered=0.75,
                          frame_groups=4),
    "batched": Scenario("batched", keys=4, rpm=120, latency_min=2, latency_max=4, offered=0.75,
                        frame_groups=4, batch=4),
    # As detect sends them with batching on: a frame's groups in one task, so in one process.
    "batched-per-frame": Scenario("batched-per-frame", keys=4, rpm=120, latency_min=2, latency_max=4,
                                  offered=0.75, frame_groups=4, batch=4, per_frame=True),
    # Batches form per process: with one process, a frame's 4 groups are never split.
    "batched-one-process": Scenario("batched-one-process", keys=4, rpm=120, latency_min=2, latency_max=4,
                                    offered=0.75, frame_groups=4, batch=4, processes=1, threads=200),
    # llm.high kept full with 4 groups a call: how far past the one-group-a-call bound.
    "batched-full": Scenario("batched-full", keys=4, rpm=120, latency_min=2, latency_max=4, batch=4),
}

def request(frame_key: str, seq: int, high: bool) -> dict[str, Any]:
    """A conflict to verify (serious on llm.high, potential on llm.low), shown in one frame."""
    at = time.time()
    conflict = ConflictEvent(
        conflict_id=f"bench:1-2:{seq}", camera_id="bench", first_track=1, second_track=2, first_label="car",
        second_label="person", kind="vehicle-pedestrian", conflict_type="crossing",
        severity=ConflictSeverity.SERIOUS if high else ConflictSeverity.POTENTIAL,
        change=ConflictChange.OPENED, start_at=at, end_at=at, start_frame="bench:1", last_frame="bench:1",
        updated_seq=seq, min_ttc_s=1.0 if high else 2.5)
    frame = EncounterFrame(frame_id="bench:1", frame_key=frame_key, moment="now", offset_s=0.0)
    return AssessRequest(conflict=conflict, frames=(frame,), box=Box(x1=0, y1=0, x2=200, y2=160), width=768,
                         height=576, high_priority=high, queued_at=at).to_wire()


def send(producer: Celery, requests: list[dict[str, Any]], high: bool) -> None:
    queue = LLM_HIGH_QUEUE if high else LLM_LOW_QUEUE
    if len(requests) == 1:
        producer.send_task("trafficrisk.assess", args=requests, queue=queue, ignore_result=True)
    else:
        producer.send_task("trafficrisk.assess_many", args=[requests], queue=queue, ignore_result=True)


def feed(producer: Celery, client: redis.Redis, crop_key: str, scenario: Scenario,
         stop: threading.Event) -> None:
    """Keep `llm.high` full, or offer `offered` times the bound at a steady rate, in frames."""
    seq, credit, last = 0, 0.0, time.monotonic()
    while not stop.is_set():
        if scenario.offered <= 0:
            wanted = 2 * scenario.processes * scenario.threads - int(client.llen(LLM_HIGH_QUEUE))
        else:
            now = time.monotonic()
            credit += (now - last) * scenario.offered * scenario.bound
            last = now
            wanted = int(credit // scenario.frame_groups) * scenario.frame_groups
            credit -= wanted
        together = scenario.frame_groups if scenario.per_frame else 1
        for _ in range(max(0, wanted) // together):
            seq += together
            high = seq % scenario.high_every == 0
            send(producer, [request(crop_key, seq, high) for _ in range(together)], high)
        stop.wait(0.1)


def sample_queues(client: redis.Redis, peaks: dict[str, int], stop: threading.Event) -> None:
    while not stop.wait(0.5):
        for queue in (LLM_HIGH_QUEUE, LLM_LOW_QUEUE):
            peaks[queue] = max(peaks.get(queue, 0), int(client.llen(queue)))


def measure(scenario: Scenario, seconds: float, warmup: float, workdir: Path) -> dict[str, float]:
    keys = [f"sk-bench-{i:04d}-{os.urandom(4).hex()}" for i in range(scenario.keys)]
    with redis_server(workdir) as redis_url:
        client = redis.Redis.from_url(redis_url)
        crop_key = Store(client).put_frame("bench", 1, (ROOT / "data" / "dog.jpg").read_bytes())
        client.persist(crop_key)
        port = free_port()
        sim_args = [*CLI, "llm-sim", "--port", str(port), "--latency-min", str(scenario.latency_min),
                    "--latency-max", str(scenario.latency_max), "--rpm-per-key", str(scenario.rpm)]
        env = bench_env(redis_url=redis_url, llm_base_url=f"http://127.0.0.1:{port}/v1",
                        llm_api_keys=",".join(keys), llm_rpm_per_key=str(scenario.rpm),
                        llm_tpm_per_key="100000000", llm_concurrency=str(scenario.threads),
                        llm_concurrency_per_key="100000", llm_timeout_s="60", log_level="WARNING",
                        llm_cache_ttl_s="0", llm_high_reserve=str(scenario.high_reserve),
                        llm_low_max_age_s=str(scenario.low_max_age_s), llm_batch_size=str(scenario.batch),
                        llm_batch_wait_ms=str(scenario.batch_wait_ms))
        producer = Celery("bench", broker=redis_url)
        producer.conf.update(task_serializer="json", accept_content=["json"], task_default_priority=5)
        stop = threading.Event()
        feeder = threading.Thread(target=feed, args=(producer, client, crop_key, scenario, stop), daemon=True)
        peaks: dict[str, int] = {}
        sampler = threading.Thread(target=sample_queues, args=(client, peaks, stop), daemon=True)
        with ExitStack() as running:
            running.enter_context(process(sim_args, env, workdir / f"sim-{scenario.name}.log"))
            _wait_http(f"http://127.0.0.1:{port}/v1/models")
            worker = [*CLI, "worker", "assess", "--pool", scenario.pool]
            procs = [running.enter_context(process([*worker, "--name", f"assess{i}@%h"], env,
                                                   workdir / f"assess-{scenario.name}-{i}.log"))
                     for i in range(scenario.processes)]
            running.callback(stop.set)
            feeder.start()
            time.sleep(warmup)
            store = Store(client)
            redis_pid = int(client.info("server")["process_id"])
            client.delete(*(key(True) for key in (llm_waits_key, llm_turnarounds_key)))  # the window's only
            before, calls_before = store.llm_outcomes(), _report(port)["requests"]
            started, redis_cpu = time.monotonic(), cpu_seconds(redis_pid)
            sampler.start()
            time.sleep(seconds)
            after, elapsed = store.llm_outcomes(), time.monotonic() - started
            redis_cpu = (cpu_seconds(redis_pid) - redis_cpu) / elapsed
            high_waits, turnarounds = sorted(store.llm_waits(True)), sorted(store.llm_turnarounds(True))
            rss = sum(rss_mib(p.pid) for p in procs)
            report = _report(port)
        producer.close()
        client.close()
    done = {k: after.get(k, 0) - before.get(k, 0) for k in ("llm", "shed", "fallback", "tokens")}
    rate = done["llm"] / elapsed
    return {"verdicts_per_s": rate, "bound": scenario.bound, "ratio": rate / scenario.bound,
            "over_limit": report["rejected_429"], "peak": report["concurrent_peak"], "rss_mib": rss,
            "redis_cpu": redis_cpu, "calls_per_s": (report["requests"] - calls_before) / elapsed,
            "tokens_per_verdict": done["tokens"] / max(done["llm"], 1),
            "shed_per_s": done["shed"] / elapsed, "fallback_per_s": done["fallback"] / elapsed,
            "high_served_per_s": len(high_waits) / elapsed,
            "high_wait_p50": percentile(high_waits, 0.5), "high_wait_p95": percentile(high_waits, 0.95),
            "turnaround_p50": percentile(turnarounds, 0.5), "turnaround_p95": percentile(turnarounds, 0.95),
            "peak_high_queue": peaks.get(LLM_HIGH_QUEUE, 0), "peak_low_queue": peaks.get(LLM_LOW_QUEUE, 0)}


def _report(port: int) -> dict[str, Any]:
    report: dict[str, Any] = requests.get(f"http://127.0.0.1:{port}/sim/report", timeout=10).json()
    return report


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def _wait_http(url: str) -> None:
    for _ in range(100):
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} does not answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", nargs="+", choices=sorted(SCENARIOS),
                        default=list(SCENARIOS))
    parser.add_argument("--seconds", type=float, default=122.0)
    parser.add_argument("--warmup", type=float, default=61.0)
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {args.seconds:.0f} s window after {args.warmup:.0f} s warm-up")
    print(f"{'scenario':>22} {'K':>3} {'R/min':>6} {'L s':>7} {'P x T':>7} {'verdicts/s':>10} {'bound':>7} "
          f"{'ratio':>6} {'429s':>5} {'peak':>5} {'rss MiB':>8} {'redis cpu':>9}")
    with tempfile.TemporaryDirectory(prefix="bench-llm-") as tmp:
        for name in args.scenario:
            s = SCENARIOS[name]
            row = measure(s, args.seconds, args.warmup, Path(tmp))
            print(f"{name:>22} {s.keys:>3} {s.rpm:>6} {f'{s.latency_min:g}-{s.latency_max:g}':>7} "
                  f"{f'{s.processes}x{s.threads}':>7} {row['verdicts_per_s']:>10.2f} {row['bound']:>7.2f} "
                  f"{row['ratio']:>6.3f} {row['over_limit']:>5} {row['peak']:>5} {row['rss_mib']:>8.0f} "
                  f"{row['redis_cpu']:>9.1%}",
                  flush=True)
            print(f"{'':>22} {describe(s, row)}", flush=True)


def describe(s: Scenario, row: dict[str, float]) -> str:
    calls = (f"{row['calls_per_s']:.2f} calls/s for {row['verdicts_per_s']:.2f} verdicts/s "
             f"({s.batch} conflict{'s' if s.batch > 1 else ''} a call at most), "
             f"{row['tokens_per_verdict']:.0f} tokens a verdict")
    if s.offered <= 0:
        return calls
    offered = (f"offered {s.offered:g}x the bound, {s.frame_groups} at a time, {s.high_share:.0%} high: "
               f"high served {row['high_served_per_s']:.2f}/s, wait p50 {row['high_wait_p50']:.2f} s, "
               f"p95 {row['high_wait_p95']:.2f} s; turnaround p50 {row['turnaround_p50']:.2f} s, "
               f"p95 {row['turnaround_p95']:.2f} s")
    if s.high_share < 1:
        offered += (f"; low shed {row['shed_per_s']:.2f}/s, other fallbacks {row['fallback_per_s']:.2f}/s; "
                    f"peak queues high {row['peak_high_queue']}, low {row['peak_low_queue']}")
    return f"{offered}\n{'':>22} {calls}"

if __name__ == "__main__":
    main()
