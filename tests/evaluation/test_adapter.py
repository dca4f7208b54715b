"""The harness adapter scores with the model's own log-softmax: hand-built requests on tiny-llama."""

import pytest
import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM

from workbench.evaluation.adapter import WorkbenchLM
from workbench.models import load_model

PAIRS = [
    ("To be, or not to be", " that is the question"),
    ("Hello", " world"),
    ("", "Once upon a time"),  # empty context: the prefix token (the byte tokenizer's CLS) conditions it
    ("A much longer context that goes on and on about nothing in particular, to pad the others", " end."),
    ("trailing space ", "moves to the continuation"),
    ("one", " token"[:2]),
]


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-llama")


def _requests(kind, args):
    return [Instance(kind, {}, arg, i) for i, arg in enumerate(args)]


def _reference(model, tokens, start):
    """Sum of log p(tokens[i] | tokens[:i]) for i >= start, and whether each is the argmax: one unpadded pass."""
    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits[0].float()
    scores = F.log_softmax(logits[:-1], dim=-1)[start - 1:]
    target = torch.tensor(tokens[start:])
    return float(scores.gather(-1, target[:, None]).sum()), bool((scores.argmax(-1) == target).all())


def test_adapter_is_a_harness_lm(tiny):
    assert isinstance(WorkbenchLM(tiny.model, tiny.tokenizer), LM)


@pytest.mark.parametrize("token_budget", [64, 8192])  # several padded batches, and one batch
def test_loglikelihood_equals_the_models_log_softmax(tiny, token_budget):
    lm = WorkbenchLM(tiny.model, tiny.tokenizer, token_budget=token_budget)
    got = lm.loglikelihood(_requests("loglikelihood", PAIRS))
    for (context, continuation), (logprob, greedy) in zip(PAIRS, got):
        stripped = context.rstrip()
        moved = context[len(stripped):] + continuation
        prefix = list(stripped.encode()) if stripped else [tiny.tokenizer.cls_token_id]
        expected, expected_greedy = _reference(tiny.model, prefix + list(moved.encode()), len(prefix))
        assert logprob == pytest.approx(expected, abs=1e-4)
        assert greedy == expected_greedy


def test_greedy_flag_is_true_for_the_models_own_continuation(tiny):
    lm = WorkbenchLM(tiny.model, tiny.tokenizer)
    context = list(b"Shall I compare thee")
    with torch.no_grad():
        token = int(tiny.model(torch.tensor([context])).logits[0, -1].argmax())
    [(_, greedy)] = lm._loglikelihood_tokens([(None, context, [token])])
    [(_, other)] = lm._loglikelihood_tokens([(None, context, [(token + 1) % 256])])
    assert greedy and not other


def test_rolling_loglikelihood_predicts_every_token_once(tiny):
    text = "Now is the winter of our discontent made glorious summer by this sun of York."
    tokens = list(text.encode())
    cls = tiny.tokenizer.cls_token_id
    whole, _ = _reference(tiny.model, [cls, *tokens], 1)
    lm = WorkbenchLM(tiny.model, tiny.tokenizer)
    [got] = lm.loglikelihood_rolling(_requests("loglikelihood_rolling", [(text,)]))
    assert got == pytest.approx(whole, abs=1e-4)
    # windows of 32 positions: the first window from the prefix, each later one with the most context
    windowed = WorkbenchLM(tiny.model, tiny.tokenizer, max_length=32)
    [rolled] = windowed.loglikelihood_rolling(_requests("loglikelihood_rolling", [(text,)]))
    expected, predicted = 0.0, 0
    stream = [cls, *tokens]
    while predicted < len(tokens):
        end = min(predicted + 32, len(tokens))
        start = max(0, end - 32)
        window = stream[start : end + 1]
        expected += _reference(tiny.model, window, predicted - start + 1)[0]
        predicted = end
    assert rolled == pytest.approx(expected, abs=1e-3)


def test_generate_until_is_greedy_and_stops_at_the_stop_string(tiny):
    lm = WorkbenchLM(tiny.model, tiny.tokenizer)
    context = "ROMEO:\nBut soft"
    [free] = lm.generate_until(_requests("generate_until", [(context, {"until": [], "max_gen_toks": 12})]))
    tokens = list(context.encode())
    with torch.no_grad():
        for _ in range(12):
            token = int(tiny.model(torch.tensor([tokens])).logits[0, -1].argmax())
            if token == tiny.tokenizer.sep_token_id:  # the byte tokenizer's end of text
                break
            tokens.append(token)
    expected = bytes(t for t in tokens[len(context.encode()):] if t < 256).decode("utf-8", errors="replace")
    assert free == expected
    if len(free) > 2:
        stop = free[2]
        [cut] = lm.generate_until(_requests("generate_until", [(context, {"until": [stop], "max_gen_toks": 12})]))
        assert cut == free.split(stop)[0]


@pytest.mark.parametrize("token_budget", [48, 8192])
def test_shared_contexts_score_as_whole_sequences(tiny, token_budget):
    """Choices of one context (a multiple-choice document) read the context once; scores are unchanged."""
    contexts = ["HAMLET:\nTo be, or not to be, that is", "A short one:", "Thou art"]
    choices = ["\nthe question", "\nthe answer to it all", "\nx", " a"]
    pairs = [(context, choice) for context in contexts for choice in choices] + [("Alone", " here")]
    lm = WorkbenchLM(tiny.model, tiny.tokenizer, token_budget=token_budget)
    got = lm.loglikelihood(_requests("loglikelihood", pairs))
    for (context, continuation), (logprob, greedy) in zip(pairs, got):
        prefix = list(context.encode())
        expected, expected_greedy = _reference(tiny.model, prefix + list(continuation.encode()), len(prefix))
        assert logprob == pytest.approx(expected, abs=1e-4)
        assert greedy == expected_greedy


def test_texts_start_with_bos_where_the_tokenizer_starts_every_text_with_it(tiny):
    from tests.models.tiny_gemma import byte_gemma_tokenizer

    gemma = WorkbenchLM(tiny.model, byte_gemma_tokenizer())
    assert gemma.tok_encode("ab") == [gemma.prefix_token_id, *gemma.tok_encode("ab", add_special_tokens=False)]
    context, continuation = gemma._encode_pair("To be", " or not")
    assert context[0] == gemma.prefix_token_id and gemma.prefix_token_id not in continuation
    plain = WorkbenchLM(tiny.model, tiny.tokenizer)
    assert plain.tok_encode("ab") == list(b"ab")  # the byte tokenizer's CLS and SEP stay out
