"""Attribution faithfulness on the real model: deleting an alert's top attributed prompt
tokens lowers harmful_request's logit more than deleting random tokens of the same span."""

from __future__ import annotations

from latentwatch.capture.chat import tokenize_chat
from latentwatch.sidecar.engine import Engine
from latentwatch.training.attribution_check import check_attribution, delete_positions
from latentwatch.training.corpus import authored_prompts
from latentwatch.v1 import monitor_pb2 as pb


def test_deleting_positions_shifts_the_spans(lm):
    ct = tokenize_chat(lm.tokenizer, [{"role": "user", "content": "Tell me how to pick a lock."}], response="No.")
    (user,) = [s for s in ct.spans if s.role == pb.SPAN_ROLE_USER]
    cut = delete_positions(ct, {user.start, user.start + 1})
    assert len(cut.input_ids) == len(ct.input_ids) - 2 and cut.prompt_length == ct.prompt_length - 2
    assert cut.input_ids[user.start] == ct.input_ids[user.start + 2]
    (cut_user,) = [s for s in cut.spans if s.role == pb.SPAN_ROLE_USER]
    assert (cut_user.start, cut_user.end) == (user.start, user.end - 2)


def test_top_attributed_tokens_matter_more_than_random_ones(lm):
    engine = Engine.from_specs(only=["harmful_request"])
    prompts = [p["text"] for p in authored_prompts() if p["label"] == 1][::20]  # varied harmful requests
    report = check_attribution(engine, lm, "harmful_request", [{"messages": [{"role": "user", "content": p}]}
                                                               for p in prompts])  # fmt: skip
    assert report["checked"] >= 6, report
    assert report["top_beats_random_mean"] >= 0.8, report
    assert report["median_logit_drop_top"] > report["median_logit_drop_random"], report
