"""The harness's view of a workbench model: an ``lm_eval`` ``LM`` over the loaded (pruned) torch module,
so that the weights a run produced are the weights its tasks score.

Requests are tokenized as the harness's own Hugging Face backend does (``TemplateLM``: trailing spaces of
a context move to its continuation; an empty context is the prefix token: BOS, else the tokenizer's CLS,
else EOS; a text starts with BOS where the tokenizer starts every text with it, as Gemma's does).
Loglikelihoods are computed in batches of at most ``token_budget`` tokens, longest first, left padded with
position ids that skip the padding, and only the continuation's logits are materialised
(``logits_to_keep``), so a 49k-token vocabulary does not multiply the batch's memory. Requests that share
a context (the choices of a multiple-choice document) compute it once and copy its keys and values to
each continuation: a document of 4 choices costs one context, not four. Generation is
greedy, one request at a time, stopping at the request's ``until`` strings.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval import utils as harness_utils
from lm_eval.api.model import TemplateLM
from torch import nn

from workbench.data import text_prefix
from workbench.progress import Bar


class WorkbenchLM(TemplateLM):
    """``loglikelihood``, ``loglikelihood_rolling`` and ``generate_until`` over a causal LM and its tokenizer
    (a Hugging Face tokenizer, or the byte tokenizer of the tiny test models)."""

    backend = "causal"

    def __init__(self, model: nn.Module, tokenizer: Any, max_length: int | None = None, token_budget: int = 8192,
                 max_batch: int = 64, progress: bool = False, max_gen_toks: int = 256):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self._device = next(model.parameters()).device
        positions = int(getattr(getattr(model, "config", None), "max_position_embeddings", 2048))
        self.max_length = min(max_length or positions, positions)
        self.token_budget = token_budget
        self.max_batch = max_batch
        self.progress = progress
        self.max_gen_toks = max_gen_toks
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._text_prefix = text_prefix(tokenizer)

    # ------------------------------------------------------------ tokens
    def _special(self, *names: str) -> int:
        for name in names:
            value = getattr(self.tokenizer, name, None)
            if value is not None:
                return int(value)
        raise ValueError(f"the tokenizer has none of {', '.join(names)}")

    @property
    def eot_token_id(self) -> int:
        return self._special("eos_token_id", "sep_token_id")

    @property
    def prefix_token_id(self) -> int:
        return self._special("bos_token_id", "cls_token_id", "eos_token_id")

    @property
    def pad_token_id(self) -> int:
        value = getattr(self.tokenizer, "pad_token_id", None)
        return int(value) if value is not None else self.eot_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        if add_special_tokens is None:  # the tokenizer's default, less the separators the byte tokenizer adds
            return self._text_prefix + list(self.tokenizer(string, add_special_tokens=False)["input_ids"])
        return list(self.tokenizer(string, add_special_tokens=add_special_tokens)["input_ids"])

    def tok_decode(self, tokens: list[int]) -> str:
        if hasattr(self.tokenizer, "decode"):
            return self.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return bytes(t for t in tokens if t < 256).decode("utf-8", errors="replace")  # the byte tokenizer

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", type(self.tokenizer).__name__)).replace("/", "__")

    # ------------------------------------------------------------ scoring
    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not self.progress)

    @torch.inference_mode()
    def _loglikelihood_tokens(self, requests: list[tuple[Any, list[int], list[int]]], disable_tqdm: bool = False,
                              desc: str = "tasks: loglikelihood") -> list[tuple[float, bool]]:
        """(log p(continuation | context), whether greedy decoding gives the continuation) per request.

        Requests that share their context (the choices of a multiple-choice document) read it once: the
        context's keys and values are computed in one pass and copied to each continuation. Other requests
        are scored whole."""
        rows = []
        for _, context, continuation in requests:
            if not continuation:
                raise ValueError("a continuation of no tokens has no loglikelihood")
            tokens = (context + continuation)[-(self.max_length + 1):]
            rows.append((tokens[:-1], tokens[-len(continuation):]))
        shared: dict[tuple[int, ...], list[int]] = {}
        for index, (inputs, targets) in enumerate(rows):
            prefix = tuple(inputs[: len(inputs) - len(targets) + 1])
            shared.setdefault(prefix, []).append(index)
        groups = [(list(prefix), members) for prefix, members in shared.items() if len(members) > 1]
        single = [members[0] for members in shared.values() if len(members) == 1]
        results: list[tuple[float, bool] | None] = [None] * len(rows)
        bar = Bar(total=len(rows), desc=desc, unit="request", enabled=not disable_tqdm and self.progress, leave=False)

        def store(indices: list[int], scores: list[tuple[float, bool]]) -> None:
            for index, result in zip(indices, scores):
                results[index] = result
                self.cache_hook.add_partial("loglikelihood", requests[index][0], result)
            bar.update(len(indices))

        single.sort(key=lambda i: (-len(rows[i][0]), i))
        start = 0
        while start < len(single):
            count = max(1, min(self.max_batch, self.token_budget // max(len(rows[single[start]][0]), 1)))
            batch = single[start : start + count]
            store(batch, self._score_batch([rows[i] for i in batch]))
            start += count
        groups.sort(key=lambda group: (-len(group[0]), group[1][0]))
        start = 0
        while start < len(groups):
            count, tokens, members = 0, 0, 0
            for prefix, indices in groups[start:]:  # whole groups, within the token and row budgets
                width = max(len(rows[i][1]) for i in indices)
                if count and (tokens + len(prefix) > self.token_budget or members + len(indices) > self.max_batch
                              or (members + len(indices)) * width > self.token_budget // 4):
                    break
                count, tokens, members = count + 1, tokens + len(prefix), members + len(indices)
            batch = groups[start : start + count]
            store([i for _, indices in batch for i in indices],
                  self._score_shared([(prefix, [rows[i][1] for i in indices]) for prefix, indices in batch]))
            start += count
        bar.close()
        return results  # type: ignore[return-value]

    def _model_kwargs(self, keep: int) -> dict[str, Any]:
        return {"logits_to_keep": keep} if self._keeps_logits else {}

    @torch.inference_mode()
    def _score_batch(self, rows: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        width = max(len(inputs) for inputs, _ in rows)
        keep = max(len(targets) for _, targets in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, (inputs, _) in enumerate(rows):  # left padding: every row's continuation ends at the last column
            input_ids[b, width - len(inputs):] = torch.tensor(inputs)
            mask[b, width - len(inputs):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=input_ids.to(self._device), attention_mask=mask.to(self._device),
                            position_ids=positions.to(self._device), **self._model_kwargs(keep)).logits[:, -keep:]
        return [_score(logits[b, keep - len(targets):], targets) for b, (_, targets) in enumerate(rows)]

    @torch.inference_mode()
    def _score_shared(self, groups: list[tuple[list[int], list[list[int]]]]) -> list[tuple[float, bool]]:
        """Each group: a prefix (the context, whose last token predicts each continuation's first) and its
        continuations. One pass over the prefixes (left padded) fills the cache, whose rows are then repeated
        per continuation; one pass over the continuations (right padded) gives the rest of their logits."""
        width = max(len(prefix) for prefix, _ in groups)
        ids = torch.full((len(groups), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(groups), width), dtype=torch.long)
        for g, (prefix, _) in enumerate(groups):
            ids[g, width - len(prefix):] = torch.tensor(prefix)
            mask[g, width - len(prefix):] = 1
        out = self.model(input_ids=ids.to(self._device), attention_mask=mask.to(self._device),
                         position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(self._device), use_cache=True,
                         **self._model_kwargs(1))
        first = out.logits[:, -1]  # predicts each continuation's first token
        owners = [g for g, (_, continuations) in enumerate(groups) for _ in continuations]
        targets = [t for _, continuations in groups for t in continuations]
        rest = max(len(t) for t in targets) - 1
        if rest == 0:
            return [_score(first[g : g + 1], t) for g, t in zip(owners, targets)]
        cache = out.past_key_values
        cache.reorder_cache(torch.tensor(owners, device=self._device))  # one copy of the prefix per continuation
        ids = torch.full((len(targets), rest), self.pad_token_id, dtype=torch.long)
        tail = torch.zeros((len(targets), rest), dtype=torch.long)
        for r, t in enumerate(targets):  # right padding: the padding comes after every scored position
            ids[r, : len(t) - 1] = torch.tensor(t[:-1], dtype=torch.long)
            tail[r, : len(t) - 1] = 1
        lengths = torch.tensor([len(groups[g][0]) for g in owners])
        logits = self.model(input_ids=ids.to(self._device), past_key_values=cache,
                            attention_mask=torch.cat([mask[owners], tail], dim=1).to(self._device),
                            position_ids=(lengths[:, None] + torch.arange(rest)[None]).to(self._device),
                            **self._model_kwargs(rest)).logits
        return [_score(torch.cat([first[g : g + 1], logits[r, : len(t) - 1]]), t)
                for r, (g, t) in enumerate(zip(owners, targets))]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """log p(whole string), in windows of the model's positions, each token predicted once (as the
        harness's Hugging Face backend does)."""
        windows, owners = [], []
        for index, (string,) in enumerate(req.args for req in requests):
            tokens = self.tok_encode(string, add_special_tokens=False)  # the prefix token starts each window
            pairs = harness_utils.get_rolling_token_windows(token_list=tokens, prefix_token=self.prefix_token_id,
                                                            max_seq_len=self.max_length, context_len=1)
            for context, continuation in map(harness_utils.make_disjoint_window, pairs):
                windows.append((None, context, continuation))
                owners.append(index)
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm, desc="tasks: rolling loglikelihood")
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, scores):
            totals[owner] += logprob
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    @torch.inference_mode()
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy continuation of each context, cut at the first of its ``until`` strings."""
        out = []
        for request in Bar(requests, desc="tasks: generate", unit="request", enabled=not disable_tqdm and self.progress,
                           leave=False):
            context, gen_kwargs = request.args
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            limit = int(gen_kwargs.get("max_gen_toks", self.max_gen_toks))
            tokens = self.tok_encode(context)[-max(1, self.max_length - limit):] or [self.prefix_token_id]
            generated: list[int] = []
            past = None
            inputs = torch.tensor([tokens], device=self._device)
            text = ""
            for _ in range(limit):
                result = self.model(input_ids=inputs, past_key_values=past, use_cache=True)
                past = result.past_key_values
                token = int(result.logits[0, -1].argmax())
                if token == self.eot_token_id:
                    break
                generated.append(token)
                text = self.tok_decode(generated)
                if any(stop and stop in text for stop in until) or len(tokens) + len(generated) >= self.max_length:
                    break
                inputs = torch.tensor([[token]], device=self._device)
            for stop in until:
                if stop:
                    text = text.split(stop)[0]
            out.append(text)
            self.cache_hook.add_partial("generate_until", request.args, text)
        return out


def _score(logits: torch.Tensor, targets: list[int]) -> tuple[float, bool]:
    """Sum of the targets' log-probabilities under ``logits`` (one row per target), and whether each
    target is the row's argmax."""
    scores = F.log_softmax(logits.float(), dim=-1)
    target = torch.tensor(targets, device=scores.device)
    return float(scores.gather(-1, target[:, None]).sum()), bool((scores.argmax(-1) == target).all())
