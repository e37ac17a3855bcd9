"""Generation speed while the sidecar is SIGKILLed mid-generation and restarted.

Four conditions, interleaved so drift hits all alike, each the median of --repeats:
(a) capture off; (b) capture on, sidecar up; (c) capture on, the sidecar process killed
after decoding step 8 and a new one started (its start-up runs while generation goes on);
(d) capture on, sidecar up, and a second sidecar started after step 8 on another port:
the same start-up CPU as (c) without the kill, so (c)/(d) isolates what the kill costs the
model (target >= 0.95: the monitor never slows the model). On a small shared machine the
start-up itself competes for CPU, which (c)/(a) includes. Also printed: the slowest
decoding step of (c) against the median step of (a), and the client's counts. Sidecars
run pinned to the last core and generation to the first, as bench.py does.
Run: nice python bench/sidecar_kill.py [--new-tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time

import torch
from latentwatch.capture import GrpcMonitorClient, HFCapture
from latentwatch.capture.chat import tokenize_chat
from latentwatch.models import load_model
from sidecar_process import start_sidecar
from transformers import StoppingCriteria, StoppingCriteriaList

PROMPT = "Write a detailed explanation of how a bicycle gear system works."
HOOKS = ["model.layers.12", "model.layers.20"]
KILL_AT = 8


def spawn_sidecar(port: int, data: str) -> subprocess.Popen:
    """Start a sidecar process and return at once (the client reconnects when it listens)."""
    env = {"LATENTWATCH_METRICS_PORT": "none", "LATENTWATCH_SQLITE_PATH": f"{data}/alerts.sqlite"}
    return start_sidecar(port, env, wait=False)


class StepClock(StoppingCriteria):
    """Never stops generation; notes when each step ends and runs ``action`` after step ``at``."""

    def __init__(self, at: int | None = None, action=None):
        self.at, self.action, self.times = at, action, []

    def __call__(self, input_ids, scores, **kwargs):
        self.times.append(time.perf_counter())
        if len(self.times) == self.at:
            self.action()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--port", type=int, default=50078)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    torch.set_num_threads(1)
    lm = load_model()
    ct = tokenize_chat(lm.tokenizer, [{"role": "user", "content": PROMPT}])
    ids = torch.tensor([ct.input_ids])
    gen = dict(
        max_new_tokens=args.new_tokens,
        min_new_tokens=args.new_tokens,
        do_sample=False,
        pad_token_id=lm.tokenizer.pad_token_id,
    )
    with tempfile.TemporaryDirectory() as data:
        procs = [spawn_sidecar(args.port, data)]
        client = GrpcMonitorClient(f"127.0.0.1:{args.port}", lm.model_id, max_buffer=4096, backoff_max_s=0.5)
        capture = HFCapture(lm.model, HOOKS, client)

        def kill_and_restart() -> None:
            procs[0].kill()
            procs[0].wait(10)
            procs[0] = spawn_sidecar(args.port, data)

        def start_another() -> None:
            procs.append(spawn_sidecar(args.port + 1, data))

        def run(condition: str, n: int) -> tuple[float, list[float]]:
            action = {"killed": kill_and_restart, "start-up": start_another}.get(condition)
            clock = StepClock(KILL_AT, action) if action else StepClock()
            t = time.perf_counter()
            with torch.no_grad():
                if condition == "off":
                    out = lm.model.generate(ids, stopping_criteria=StoppingCriteriaList([clock]), **gen)
                else:
                    with capture.request(f"{condition}-{n}", ct.spans):
                        out = lm.model.generate(ids, stopping_criteria=StoppingCriteriaList([clock]), **gen)
            rate = (out.shape[1] - ids.shape[1]) / (time.perf_counter() - t)
            for extra in procs[1:]:
                extra.kill()
                extra.wait(10)
            del procs[1:]
            return rate, torch.tensor(clock.times).diff().tolist()

        try:
            if not client.wait_connected(300):
                raise RuntimeError("the sidecar did not start")
            run("off", -1)  # warm-up
            rates: dict[str, list[float]] = {"off": [], "on": [], "killed": [], "start-up": []}
            steps: dict[str, list[float]] = {c: [] for c in rates}
            for n in range(args.repeats):
                before = client.reconnects
                for condition in rates:
                    rate, step_times = run(condition, n)
                    rates[condition].append(rate)
                    steps[condition] += step_times
                deadline = time.monotonic() + 300
                while client.reconnects == before:  # the new sidecar is up before the next repeat
                    if time.monotonic() > deadline:
                        raise RuntimeError("the client did not reconnect")
                    time.sleep(0.1)
        finally:
            capture.remove()
            client.close(flush_timeout=1)
            for p in procs:
                p.kill()
                p.wait(10)
    off, on, killed, startup = (statistics.median(rates[c]) for c in ("off", "on", "killed", "start-up"))
    print(
        f"generation, {args.new_tokens} tokens, {len(HOOKS)} layers captured, median of {args.repeats}: "
        f"(a) capture off {off:.1f} tok/s; (b) on {on:.1f} tok/s, (b)/(a) {on / off:.3f}; "
        f"(c) sidecar killed at step {KILL_AT} and restarted {killed:.1f} tok/s, (c)/(a) {killed / off:.3f}; "
        f"(d) a sidecar start-up at step {KILL_AT}, no kill {startup:.1f} tok/s; "
        f"(c)/(d) {killed / startup:.3f} (target >= 0.95)"
    )
    print(
        f"decoding steps: median {statistics.median(steps['off']) * 1e3:.1f} ms with capture off; "
        f"slowest {max(steps['killed']) * 1e3:.1f} ms in the killed runs "
        f"(median {statistics.median(steps['killed']) * 1e3:.1f} ms)"
    )
    print(
        f"client: {client.interrupted} requests interrupted, chunks dropped {client.drops}, "
        f"{client.rejected} refused, {client.reconnects} reconnects"
    )


if __name__ == "__main__":
    main()
