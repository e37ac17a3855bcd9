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
# latentwatch fit's stages, in order (latentwatch.training.fit.Fit.stages)
STAGES = ("corpus", "sae", "specs", "probes", "eval_sets", "evaluate", "card")


def _config(args):
    from latentwatch.sidecar.config import Config

    return Config.load(
        args.config,
        listen=getattr(args, "listen", None),
        redis_url=getattr(args, "redis_url", None),
        sqlite_path=getattr(args, "sqlite", None),
        metrics_port=getattr(args, "metrics_port", None),
        detectors=getattr(args, "detectors", None),
        tls_cert=getattr(args, "tls_cert", None),
        tls_key=getattr(args, "tls_key", None),
        tls_client_ca=getattr(args, "tls_client_ca", None),
        auth_token_file=getattr(args, "auth_token_file", None),
        allow_insecure=getattr(args, "allow_insecure", None),
        alert_text=getattr(args, "alert_text", None),
        models=getattr(args, "models", None),
        act=getattr(args, "act", None),
    )


def cmd_serve(args) -> int:
    from latentwatch.sidecar.server import serve_forever

    serve_forever(_config(args))
    return 0


def cmd_demo(args) -> int:
    from latentwatch.demo import run_demo

    return run_demo(_config(args), model=args.model, max_new_tokens=args.max_new_tokens)


def _records_file(name: str) -> Path:
    """A JSONL records file with every line checked before any model loads: a missing
    file or a malformed line is refused with a sentence (exit 2, through ``main``)."""
    from latentwatch.capture.score import read_records

    path = Path(name)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    for _ in read_records(path):
        pass
    return path


def cmd_score(args) -> int:
    from latentwatch.capture.score import score_file
    from latentwatch.models import load_model
    from latentwatch.sidecar.engine import Engine

    path = _records_file(args.file)
    cfg = _config(args)
    out = open(args.output, "w") if args.output else sys.stdout
    try:
        if args.ray is not None:
            from latentwatch.integrations.ray.score import score_file_ray

            address = None if args.ray == "local" else args.ray
            n = score_file_ray(path, out, args.model, cfg.spec_paths(args.model), cfg.detectors or None, address,
                               args.workers, args.batch_size)  # fmt: skip
        else:
            lm = load_model(args.model)  # first: an unknown model's sentence says how to name one
            engine = Engine.from_specs(cfg.spec_paths(args.model), only=cfg.detectors or None)
            n = score_file(engine, lm, path, out, args.batch_size)
    finally:
        if args.output:
            out.close()
    print(f"scored {n} records", file=sys.stderr)
    return 0


def cmd_generate(args) -> int:
    from latentwatch.capture.generate import generate_file
    from latentwatch.models import load_model
    from latentwatch.sidecar.engine import Engine

    path = _records_file(args.file)
    cfg = _config(args)
    lm = load_model(args.model)
    engine = Engine.from_specs(cfg.spec_paths(args.model), only=cfg.detectors or None, act=cfg.act)
    out = open(args.output, "w") if args.output else sys.stdout
    try:
        n = generate_file(engine, lm, path, out, args.max_new_tokens, act=cfg.act == "steer")
    finally:
        if args.output:
            out.close()
    print(f"generated {n} responses", file=sys.stderr)
    return 0


def cmd_consume(args) -> int:
    import signal
    import socket
    import threading

    import redis

    from latentwatch.export.consumer import AlertConsumer, print_json
    from latentwatch.export.redis_client import redis_client

    cfg = _config(args)
    if not cfg.redis_url:
        print(
            "latentwatch consume: needs --redis-url (or redis_url in --config, or LATENTWATCH_REDIS_URL)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # finish the alert in hand, then leave
    try:
        client = redis_client(cfg.redis_url, cfg.redis_cluster, decode_responses=True)
        consumer = AlertConsumer(
            client,
            args.group,
            args.name or socket.gethostname(),
            print_json,
            stream=cfg.redis_stream,
            claim_idle_s=args.claim_idle,
            max_deliveries=args.max_deliveries,
        )
        consumer.run(stop)
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        print(f"latentwatch consume: Redis at {cfg.redis_url}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def cmd_detectors(args) -> int:
    from latentwatch.detectors.kinds import load_spec
    from latentwatch.detectors.packs import packs

    paths = _config(args).spec_paths()
    if args.all:
        paths = [p for pk in packs() for p in pk.spec_paths() + pk.spec_paths(experimental=True)]
    for p in paths:
        s = load_spec(p)
        tag = " [experimental]" if p.parent.name == "experimental" else ""
        print(f"{s.name:20} kind={s.kind:14} sae={s.sae} threshold={s.threshold:.4f} target_fpr={s.target_fpr}{tag}")
        if s.description:
            print(f"{'':20} {s.description}")
    return 0


def cmd_build_corpus(args) -> int:
    from latentwatch.models import load_model
    from latentwatch.training.corpus import build_corpus

    heldout_slice = Path(args.heldout_slice) if args.heldout_slice else None
    lm = load_model(args.model)
    n_train, n_heldout = build_corpus(lm, Path(args.out), args.response_tokens, args.seed, args.limit, heldout_slice)
    print(f"wrote {n_train} training transcripts to {args.out} and {n_heldout} held-out ones beside it")
    return 0


def cmd_train_sae(args) -> int:
    from latentwatch.training.corpus import heldout_path, read_jsonl
    from latentwatch.training.sae import SAETrainSpec, train_sae

    corpus = Path(args.corpus)
    if not corpus.exists():
        raise FileNotFoundError(f"no corpus at {corpus}; write one with `latentwatch build-corpus --out {corpus}`")
    spec = SAETrainSpec(
        model=args.model,
        hook_name=args.hook,
        architecture=args.architecture,
        d_sae=args.width,
        k=args.k,
        l0_coefficient=args.l0_coefficient,
        training_tokens=args.tokens,
        lr=args.lr,
        seed=args.seed,
        dtype=args.dtype,
    )
    held = heldout_path(corpus)
    heldout = read_jsonl(held) if held.exists() else None
    card = train_sae(spec, corpus, Path(args.out), heldout=heldout, progress=not args.quiet)
    print(json.dumps(card, indent=2))
    return 0


def cmd_sae_quality(args) -> int:
    from latentwatch.detectors.packs import sae_dirs
    from latentwatch.detectors.saes import load_sae
    from latentwatch.models import load_model
    from latentwatch.training.corpus import heldout_path, read_jsonl
    from latentwatch.training.sae import measure_quality

    sae = load_sae(args.sae, sae_dirs())
    held = heldout_path(Path(args.corpus))
    if not held.exists():
        raise FileNotFoundError(f"no held-out transcripts at {held}; `latentwatch build-corpus` writes them")
    heldout = read_jsonl(held)[:: args.every]
    card = measure_quality(load_model(args.model), sae.path, heldout)
    print(json.dumps(card["quality"], indent=2))
    return 0


def cmd_steer_direction(args) -> int:
    from latentwatch.capture.score import read_records
    from latentwatch.jsonl import write_rows
    from latentwatch.models import load_model
    from latentwatch.training.steer_direction import CONTINUATION, mean_difference, own_answers, save_direction

    data = _records_file(args.data) if args.data else None
    lm = load_model(args.model)
    if data is not None:
        records = [rec for _, rec in read_records(data)]
    else:
        records = own_answers(lm, args.after + CONTINUATION)
        if args.answers:
            write_rows(Path(args.answers), records)
    direction, used = mean_difference(lm, args.hook, records, after=args.after)
    refusals = sum(int(r["label"]) for r in records)
    save_direction(Path(args.out), direction, args.hook, (refusals, used))
    print(f"{args.out}: {used} answers cut after {args.after} tokens, continued by one of {refusals} own refusals "
          f"vs their own continuation, at {args.hook}; norm {direction.norm():.2f}")  # fmt: skip
    return 0


def cmd_train_probe(args) -> int:
    from latentwatch.detectors.base import DetectorSpec
    from latentwatch.detectors.packs import pack, pack_for_model, sae_dirs
    from latentwatch.detectors.saes import load_sae
    from latentwatch.models import load_model
    from latentwatch.training import recipes

    recipe = recipes.get(args.detector)
    corpus, data = (Path(x) if x else None for x in (args.corpus, args.data))
    missing = recipes.missing_inputs(recipe, corpus, data)
    if missing:
        print(f"latentwatch train-probe: {args.detector} needs {' and '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    # Specs in specs/experimental/ are trained the same way; they are enabled once good enough to ship.
    spec_path = (pack(args.pack) if args.pack else pack_for_model(args.model)).spec_path(args.detector)
    spec = DetectorSpec.from_yaml(spec_path)
    lm, sae = load_model(args.model), load_sae(spec.sae, [spec_path.parent, *sae_dirs()])
    recipe.fit(recipes.RecipeInputs(lm, sae, spec_path, corpus, data))
    return 0


def _engine_for(args, name: str):
    """An in-process engine with the named detector (and what it requires)."""
    from latentwatch.sidecar.engine import Engine

    cfg = _config(args)
    cfg.detectors = cfg.detectors or [name]  # so an experimental detector is found by name too
    engine = Engine.from_specs(cfg.spec_paths(args.model), only=[name])
    spec = next(d.spec for d in engine.detectors if d.name == name)
    return engine, spec


EVAL_SETS = ("part1", "rag", "bias")


def cmd_make_eval_sets(args) -> int:
    from latentwatch.models import load_model

    sets = [x for x in args.sets.split(",") if x]
    if not sets or set(sets) - set(EVAL_SETS):
        print(f"latentwatch make-eval-sets: --sets takes a comma list of {', '.join(EVAL_SETS)}", file=sys.stderr)
        return EXIT_USAGE
    if "part1" in sets and not args.corpus:
        print("latentwatch make-eval-sets: the part1 sets need --corpus (from `latentwatch build-corpus`)",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    lm, out, counts = load_model(args.model), Path(args.out), {}
    if "part1" in sets:
        from latentwatch.training.eval_sets import build_eval_sets

        counts |= build_eval_sets(lm, Path(args.corpus), out)
    if "rag" in sets:
        from latentwatch.training.rag import build_rag_sets

        counts |= build_rag_sets(lm, out)
    if "bias" in sets:
        from latentwatch.training.bias import build_bias_sets

        counts |= build_bias_sets(lm, out)
    for name, n in counts.items():
        print(f"{n:6d} {out / name}")
    return 0


def cmd_calibrate(args) -> int:
    from latentwatch.models import load_model
    from latentwatch.training.evaluate import calibrate

    engine, spec = _engine_for(args, args.detector)
    print(json.dumps(calibrate(engine, load_model(args.model), spec, Path(args.data), args.fpr), indent=2))
    return 0


def cmd_eval(args) -> int:
    from latentwatch.models import load_model
    from latentwatch.training.evaluate import evaluate

    engine, spec = _engine_for(args, args.detector)
    roc = Path(args.roc) if args.roc else Path(args.data).with_suffix(f".{spec.name}.roc.png")
    print(json.dumps(evaluate(engine, load_model(args.model), spec, Path(args.data), roc), indent=2))
    return 0


def cmd_check_attribution(args) -> int:
    from latentwatch.capture.score import read_records
    from latentwatch.models import load_model
    from latentwatch.training.attribution_check import check_attribution

    engine, spec = _engine_for(args, args.detector)
    records = [r for _, r in read_records(Path(args.data)) if r.get("label", 1) == 1][: args.limit]
    print(json.dumps(check_attribution(engine, load_model(args.model), spec.name, records, k=args.k), indent=2))
    return 0


def cmd_fit(args) -> int:
    from latentwatch.training.fit import Fit, FitOptions

    opts = FitOptions(
        model=args.model,
        out=Path(args.out or f"detectors/{args.model}"),
        work=Path(args.work or f"latentwatch-data/fit/{args.model}"),
        layer=args.layer,
        sae_width=args.sae_width,
        sae_k=args.sae_k,
        sae_tokens=args.sae_tokens,
        response_tokens=args.response_tokens,
        limit=args.limit,
    )
    state = Fit(opts).run(until=args.until)
    print(json.dumps({"pack": str(opts.out), "work": str(opts.work), "wall_seconds": state["wall_seconds"]}))
    return 0


def cmd_explain(args) -> int:
    from latentwatch.training.inspect_latents import explain

    print(explain(args.sae, args.latent))
    return 0


def cmd_explain_alert(args) -> int:
    from latentwatch.export import explain_alert as ea
    from latentwatch.export.redis_client import redis_client

    cfg = _config(args)
    if cfg.redis_url and not args.sqlite:
        import redis

        try:
            client = redis_client(cfg.redis_url, cfg.redis_cluster, decode_responses=True)
            alert = ea.from_redis(client, cfg.redis_stream, args.alert_id)
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            print(f"latentwatch explain-alert: Redis at {cfg.redis_url}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
    else:
        alert = ea.from_sqlite(Path(cfg.sqlite_path), args.alert_id)
    print(ea.render_terminal(alert, color=sys.stdout.isatty() and not args.no_color))
    if args.html:
        Path(args.html).write_text(ea.render_html(alert))
        print(f"wrote {args.html}")
    return 0


def cmd_label_latents(args) -> int:
    from latentwatch.detectors.packs import sae_dirs
    from latentwatch.detectors.saes import load_sae
    from latentwatch.models import load_model
    from latentwatch.training.labels import label_latents, label_sample

    sae = load_sae(args.sae, sae_dirs())
    lm = load_model(args.model)
    labels = label_latents(lm, sae, label_sample(Path(args.corpus) if args.corpus else None), sae.path, args.tokens)
    print(f"labelled {len(labels)} of {sae.d_sae} latents of {sae.sae_id} (scores in {sae.path}/label_scores.json)")
    return 0


def cmd_inspect(args) -> int:
    from latentwatch.detectors.packs import sae_dirs
    from latentwatch.detectors.saes import load_sae
    from latentwatch.models import load_model
    from latentwatch.training.inspect_latents import render_html, render_table, token_latents

    sae = load_sae(args.sae, sae_dirs())
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
            sp.add_argument("--listen", help="unix:PATH or host:port (default unix:latentwatch-data/monitor.sock)")
            sp.add_argument("--redis-url", help="send alerts to this Redis (Streams) instead of SQLite")
            sp.add_argument("--sqlite", help="SQLite alert file when no Redis is configured")
            sp.add_argument("--metrics-port", type=int, help="port of /metrics (default 9464)")
            sp.add_argument("--tls-cert", help="PEM certificate chain: serve TLS (with --tls-key)")
            sp.add_argument("--tls-key", help="PEM private key of --tls-cert")
            sp.add_argument("--tls-client-ca", help="PEM CA: require client certificates it signed (mutual TLS)")
            sp.add_argument("--auth-token-file", help="require 'authorization: Bearer <token>' with the token here")
            sp.add_argument(
                "--allow-insecure",
                action="store_true",
                default=None,
                help="serve a network-reachable address without TLS and client authentication",
            )
            sp.add_argument("--alert-text", choices=["none", "hashed", "full"], help="text in alerts (default none)")
            sp.add_argument("--act", choices=["observe", "steer"], help="hand captures the edits of act: steer specs")

    sp = sub.add_parser("serve", help="run the sidecar")
    common(sp)
    sp.add_argument("--models", type=lambda s: s.split(","), help="models to monitor, comma-separated")
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
    sp.add_argument("--batch-size", type=int, default=8, help="records per batched forward")
    sp.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run as a Ray Data job on the cluster at ADDRESS (no address: a local one); needs the ray extra",
    )
    sp.add_argument("--workers", type=int, default=1, help="with --ray: actors, one model each")
    sp.set_defaults(fn=cmd_score)

    sp = sub.add_parser("generate", help="answer a JSONL file of prompts under the live monitor, acting if asked")
    common(sp, server=False)
    sp.add_argument("file")
    sp.add_argument("--model", default=BUNDLED_MODEL)
    sp.add_argument("-o", "--output", help="write JSON lines here (default stdout)")
    sp.add_argument("--max-new-tokens", type=int, default=64)
    sp.add_argument("--act", choices=["observe", "steer"], default="observe",
                    help="steer: apply the edits of detectors whose specs say act: steer")  # fmt: skip
    sp.set_defaults(fn=cmd_generate)

    sp = sub.add_parser("consume", help="print alerts from the Redis stream as JSON lines, as one of a consumer group")
    sp.add_argument("--config", help="YAML settings file (redis_url, redis_cluster, redis_stream)")
    sp.add_argument("--redis-url", help="the Redis the sidecars send alerts to")
    sp.add_argument("--group", default="latentwatch", help="consumer group: its members share the alerts")
    sp.add_argument("--name", help="this consumer's name in the group (default: the host name)")
    sp.add_argument(
        "--claim-idle",
        type=float,
        default=60.0,
        help="take over alerts another consumer left unacknowledged this many seconds",
    )
    sp.add_argument("--max-deliveries", type=int, default=5, help="then move an alert to <stream>:dead")
    sp.set_defaults(fn=cmd_consume)

    sp = sub.add_parser("detectors", help="list the configured detectors")
    common(sp, server=False)
    sp.add_argument("--all", action="store_true", help="every bundled pack's specs, experimental ones too")
    sp.set_defaults(fn=cmd_detectors)

    sp = sub.add_parser("build-corpus", help="write the SAE training corpus (prompts + the model's answers)")
    sp.add_argument("--model", default=BUNDLED_MODEL)
    sp.add_argument("--response-tokens", type=int, default=48)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--limit", type=int, help="keep only the first N prompts of each part (a quick check)")
    sp.add_argument(
        "--heldout-slice",
        help="also write the held-out transcripts of authored prompts here (the SAE tests' slice: "
        "service/latentwatch/training/data/heldout_chat.jsonl in a checkout)",
    )
    sp.add_argument("--out", required=True)
    sp.set_defaults(fn=cmd_build_corpus)

    sp = sub.add_parser("train-sae", help="train an SAE with sae-lens on a chat corpus")
    sp.add_argument("--model", default=BUNDLED_MODEL)
    sp.add_argument("--hook", default="model.layers.12")
    sp.add_argument("--corpus", required=True, help="JSONL of {messages} from `latentwatch build-corpus`")
    sp.add_argument("--architecture", default="topk", help="topk, batchtopk or jumprelu")
    sp.add_argument("--width", type=int, default=4096)
    sp.add_argument("--k", type=int, default=48, help="topk/batchtopk: active latents per token")
    sp.add_argument("--l0-coefficient", type=float, default=5.0, help="jumprelu: L0 penalty weight")
    sp.add_argument("--tokens", type=int, default=1_000_000)
    sp.add_argument("--lr", type=float, default=4e-4)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--dtype", default="float16", help="storage dtype of the weights: float16 or float32")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.add_argument("--out", required=True)
    sp.set_defaults(fn=cmd_train_sae)

    sp = sub.add_parser("fit", help="fit a detector pack for a model: corpus, SAE, probes, calibration, evaluation")
    sp.add_argument("--model", required=True)
    sp.add_argument("--out", help="the pack folder (default detectors/MODEL)")
    sp.add_argument("--work", help="corpus and evaluation files, kept local (default latentwatch-data/fit/MODEL)")
    sp.add_argument("--layer", type=int, help="the layer the SAE and probes read (default: the middle one)")
    sp.add_argument("--sae-width", type=int, default=4096)
    sp.add_argument("--sae-k", type=int, default=48)
    sp.add_argument("--sae-tokens", type=int, default=1_000_000)
    sp.add_argument("--response-tokens", type=int, default=48)
    sp.add_argument("--limit", type=int, help="keep only the first N prompts of each corpus part (a quick run)")
    sp.add_argument("--until", choices=STAGES, help="stop after this stage (a rerun carries on from there)")
    sp.set_defaults(fn=cmd_fit)

    sp = sub.add_parser("explain", help="show a latent's label and top-activating contexts")
    sp.add_argument("latent", type=int)
    sp.add_argument("--sae", default="smollm2-135m-instruct-l12")
    sp.set_defaults(fn=cmd_explain)

    sp = sub.add_parser("explain-alert", help="show the tokens behind an alert (SQLite file or Redis stream)")
    sp.add_argument("alert_id", help="the alert's id, or its first 8+ characters")
    sp.add_argument("--config", help="YAML settings file: where the sidecar puts its alerts")
    sp.add_argument("--sqlite", help="the SQLite alert file (default: the configured one)")
    sp.add_argument("--redis-url", help="read the alert from this Redis's stream instead")
    sp.add_argument("--html", help="also write a self-contained HTML page here")
    sp.add_argument("--no-color", action="store_true", help="plain text: [token|share] instead of colours")
    sp.set_defaults(fn=cmd_explain_alert)

    sp = sub.add_parser("label-latents", help="relabel an SAE's latents (input and output labels, each scored)")
    sp.add_argument("--sae", required=True, help="the SAE (a pack's SAE name or a folder)")
    sp.add_argument("--model", default=BUNDLED_MODEL)
    sp.add_argument("--corpus", help="chat corpus (build-corpus); default: authored chat and dev train-split text")
    sp.add_argument("--tokens", type=int, default=60_000, help="tokens read, half to label and half to score")
    sp.set_defaults(fn=cmd_label_latents)

    sp = sub.add_parser("inspect", help="show which latents fire on which tokens of a text")
    sp.add_argument("text")
    sp.add_argument("--sae", default="smollm2-135m-instruct-l12")
    sp.add_argument("--model", default=BUNDLED_MODEL)
    sp.add_argument("--top", type=int, default=3)
    sp.add_argument("--html", help="also write a self-contained HTML page here")
    sp.set_defaults(fn=cmd_inspect)

    sp = sub.add_parser("sae-quality", help="measure an SAE on held-out chat and update its card")
    sp.add_argument("--sae", required=True, help="the SAE (a pack's SAE name or a folder)")
    sp.add_argument("--model", default=BUNDLED_MODEL)
    sp.add_argument("--corpus", required=True, help="the corpus whose held-out twin (chat.heldout.jsonl) is read")
    sp.add_argument("--every", type=int, default=1, help="every Nth held-out transcript only (a quicker measure)")
    sp.set_defaults(fn=cmd_sae_quality)

    sp = sub.add_parser("steer-direction", help="a refusal direction from the model's own refusals and compliances")
    sp.add_argument("--model", default=BUNDLED_MODEL)
    sp.add_argument("--hook", required=True, help="the module whose output the edit goes into (the toward detector's)")
    sp.add_argument("--out", required=True, help="the safetensors file a spec's steer.direction names")
    sp.add_argument("--data", help="labelled answers (score format, label 1 = refusal) instead of generating them")
    sp.add_argument("--after", type=int, default=16, help="response tokens before the edit starts (the absence window)")
    sp.add_argument("--answers", help="also keep the generated, labelled answers here (they hold dev text: keep local)")
    sp.set_defaults(fn=cmd_steer_direction)

    sp = sub.add_parser("train-probe", help="fit and calibrate a detector's probe")
    sp.add_argument("detector", help="the detector whose recipe to run (see latentwatch.training.recipes)")
    sp.add_argument("--model", default=BUNDLED_MODEL)
    sp.add_argument("--pack", help="the detector pack whose spec and probe to write (default: the model's)")
    sp.add_argument("--corpus", help="refusal: the corpus of the model's own answers")
    sp.add_argument("--data", help="context_attending and the bias probes: the folder make-eval-sets wrote")
    sp.set_defaults(fn=cmd_train_probe)

    sp = sub.add_parser("make-eval-sets", help="write labelled calibration and test files from held-out data")
    sp.add_argument("--corpus", help="the SAE corpus (its train-split answers calibrate refusal); part1 needs it")
    sp.add_argument("--model", default=BUNDLED_MODEL)
    sp.add_argument("--out", required=True, help="folder for the JSONL files (they hold dev text: keep local)")
    sp.add_argument(
        "--sets",
        default=",".join(EVAL_SETS),
        help="which sets: part1 (harmful request, refusal, compliance), rag, bias (default: all)",
    )
    sp.set_defaults(fn=cmd_make_eval_sets)

    sp = sub.add_parser("calibrate", help="set a detector's threshold from benign data at a target FPR")
    common(sp, server=False)
    sp.add_argument("detector")
    sp.add_argument("--data", required=True, help="JSONL records (score format); label-0 rows are used")
    sp.add_argument("--fpr", type=float, help="target false-positive rate (default: the spec's, 0.01)")
    sp.add_argument("--model", default=BUNDLED_MODEL)
    sp.set_defaults(fn=cmd_calibrate)

    sp = sub.add_parser("eval", help="AUROC, TPR at 1%%/5%% FPR and F1 of a detector and its baselines")
    common(sp, server=False)
    sp.add_argument("detector")
    sp.add_argument("--data", required=True, help="JSONL records (score format) with `label` 1/0")
    sp.add_argument("--roc", help="ROC plot PNG (default: beside the data file)")
    sp.add_argument("--model", default=BUNDLED_MODEL)
    sp.set_defaults(fn=cmd_eval)

    sp = sub.add_parser("check-attribution", help="do alerts' top attributed tokens matter more than random ones?")
    common(sp, server=False)
    sp.add_argument("detector")
    sp.add_argument("--data", required=True, help="JSONL records (score format); rows with label 0 are skipped")
    sp.add_argument("--model", default=BUNDLED_MODEL)
    sp.add_argument("--k", type=int, default=3, help="tokens deleted per trial")
    sp.add_argument("--limit", type=int, help="first N records only")
    sp.set_defaults(fn=cmd_check_attribution)
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
