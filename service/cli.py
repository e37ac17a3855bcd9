"""The ``latentwatch`` command line.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input (with a
sentence saying what was wrong).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

EXIT_FAILURE = 1
EXIT_USAGE = 2


def _config(args):
    from latentwatch.config import Config

    return Config.load(
        args.config,
        listen=getattr(args, "listen", None),
        redis_url=getattr(args, "redis_url", None),
        sqlite_path=getattr(args, "sqlite", None),
        metrics_port=getattr(args, "metrics_port", None),
        detectors=getattr(args, "detectors", None),
    )


def cmd_serve(args) -> int:
    from latentwatch.server import serve_forever

    serve_forever(_config(args))
    return 0


def cmd_demo(args) -> int:
    from latentwatch.demo import run_demo

    return run_demo(_config(args), model=args.model, max_new_tokens=args.max_new_tokens)


def cmd_score(args) -> int:
    from latentwatch.engine import Engine
    from latentwatch.models import load_model
    from latentwatch.score import RecordError, read_records, score_file

    path = Path(args.file)
    if not path.exists():
        print(f"latentwatch score: {path} does not exist", file=sys.stderr)
        return EXIT_USAGE
    try:
        for _ in read_records(path):
            pass
    except RecordError as exc:
        print(f"latentwatch score: {exc}", file=sys.stderr)
        return EXIT_USAGE
    cfg = _config(args)
    engine = Engine.from_specs(cfg.spec_paths(), only=cfg.detectors or None)
    lm = load_model(args.model)
    out = open(args.output, "w") if args.output else sys.stdout
    try:
        n = score_file(engine, lm, path, out)
    finally:
        if args.output:
            out.close()
    print(f"scored {n} records", file=sys.stderr)
    return 0


def cmd_detectors(args) -> int:
    from latentwatch.detectors.base import DetectorSpec

    for p in _config(args).spec_paths():
        s = DetectorSpec.from_yaml(p)
        print(f"{s.name:20} kind={s.kind:14} sae={s.sae} threshold={s.threshold:.4f} target_fpr={s.target_fpr}")
        if s.description:
            print(f"{'':20} {s.description}")
    return 0


def cmd_train_sae(args) -> int:
    from latentwatch.corpus import corpus_prompts, generate_responses, read_jsonl, write_jsonl
    from latentwatch.models import load_model
    from latentwatch.train_sae import SAETrainSpec, train_sae

    corpus = Path(args.corpus)
    if not corpus.exists():
        lm = load_model(args.model)
        write_jsonl(corpus, generate_responses(lm, corpus_prompts(args.dev_harmless), args.response_tokens))
    spec = SAETrainSpec(
        model=args.model, hook_name=args.hook, d_sae=args.width, k=args.k, training_tokens=args.tokens, seed=args.seed
    )
    print(json.dumps(train_sae(spec, read_jsonl(corpus), Path(args.out)), indent=2))
    return 0


def cmd_train_probe(args) -> int:
    from latentwatch.detectors import SAES_DIR, SPECS_DIR
    from latentwatch.detectors.base import DetectorSpec
    from latentwatch.models import load_model
    from latentwatch.saes import load_sae
    from latentwatch.train_probe import train_harmful_request

    spec_path = SPECS_DIR / f"{args.detector}.yaml"
    if args.detector != "harmful_request":
        print("latentwatch train-probe: only harmful_request has a training recipe so far", file=sys.stderr)
        return EXIT_USAGE
    spec = DetectorSpec.from_yaml(spec_path)
    train_harmful_request(load_model(args.model), load_sae(spec.sae, [SAES_DIR]), spec_path)
    return 0


def cmd_explain(args) -> int:
    from latentwatch.inspect_latents import explain

    print(explain(args.sae, args.latent))
    return 0


def cmd_inspect(args) -> int:
    from latentwatch.detectors import SAES_DIR
    from latentwatch.inspect_latents import render_html, render_table, token_latents
    from latentwatch.models import load_model
    from latentwatch.saes import load_sae

    sae = load_sae(args.sae, [SAES_DIR])
    rows = token_latents(load_model(args.model), sae, args.text, top=args.top)
    print(render_table(sae, rows))
    if args.html:
        Path(args.html).write_text(render_html(sae, args.text, rows))
        print(f"wrote {args.html}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from latentwatch.models import BUNDLED_MODEL

    p = argparse.ArgumentParser(prog="latentwatch", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, server: bool = True):
        sp.add_argument("--config", help="YAML settings file (see README: Configuration)")
        sp.add_argument("--detectors", type=lambda s: s.split(","), help="comma-separated detectors to enable")
        if server:
            sp.add_argument("--listen", help="host:port or unix:///path.sock (default 127.0.0.1:50051)")
            sp.add_argument("--redis-url", help="send alerts to this Redis (Streams) instead of SQLite")
            sp.add_argument("--sqlite", help="SQLite alert file when no Redis is configured")
            sp.add_argument("--metrics-port", type=int, help="port of /metrics (default 9464)")

    sp = sub.add_parser("serve", help="run the sidecar")
    common(sp)
    sp.set_defaults(fn=cmd_serve)

    sp = sub.add_parser("demo", help="run the bundled model with capture through a local sidecar")
    common(sp)
    sp.add_argument("--model", default=BUNDLED_MODEL)
    sp.add_argument("--max-new-tokens", type=int, default=32)
    sp.set_defaults(fn=cmd_demo)

    sp = sub.add_parser("score", help="score a JSONL file of transcripts offline")
    common(sp, server=False)
    sp.add_argument("file")
    sp.add_argument("-o", "--output", help="write JSON lines here instead of stdout")
    sp.add_argument("--model", default=BUNDLED_MODEL)
    sp.set_defaults(fn=cmd_score)

    sp = sub.add_parser("detectors", help="list the configured detectors")
    common(sp, server=False)
    sp.set_defaults(fn=cmd_detectors)

    sp = sub.add_parser("train-sae", help="train an SAE with sae-lens on a chat corpus")
    sp.add_argument("--model", default=BUNDLED_MODEL)
    sp.add_argument("--hook", default="model.layers.12")
    sp.add_argument("--corpus", required=True, help="JSONL of {messages}; built from prompts if missing")
    sp.add_argument("--dev-harmless", type=int, default=350, help="dev harmless prompts in a built corpus")
    sp.add_argument("--response-tokens", type=int, default=40)
    sp.add_argument("--width", type=int, default=2048)
    sp.add_argument("--k", type=int, default=32)
    sp.add_argument("--tokens", type=int, default=250_000)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", required=True)
    sp.set_defaults(fn=cmd_train_sae)

    sp = sub.add_parser("explain", help="show a latent's label and top-activating contexts")
    sp.add_argument("latent", type=int)
    sp.add_argument("--sae", default="smollm2-135m-instruct-l12")
    sp.set_defaults(fn=cmd_explain)

    sp = sub.add_parser("inspect", help="show which latents fire on which tokens of a text")
    sp.add_argument("text")
    sp.add_argument("--sae", default="smollm2-135m-instruct-l12")
    sp.add_argument("--model", default=BUNDLED_MODEL)
    sp.add_argument("--top", type=int, default=3)
    sp.add_argument("--html", help="also write a self-contained HTML page here")
    sp.set_defaults(fn=cmd_inspect)

    sp = sub.add_parser("train-probe", help="fit, calibrate and evaluate a detector's probe")
    sp.add_argument("detector")
    sp.add_argument("--model", default=BUNDLED_MODEL)
    sp.set_defaults(fn=cmd_train_probe)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"latentwatch {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
