"""POST /v1/completions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from vllm.outputs import CompletionOutput, RequestOutput
from vllm.utils.async_utils import merge_async_iterators

from server.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    json_logprob,
    new_id,
)
from server.serving import Call, ServingContext, decoded_token, last_output
from server.streaming import Stream, sse


class CompletionServing:
    endpoint = "completions"

    def __init__(self, ctx: ServingContext) -> None:
        self.ctx = ctx

    def prepare(self, call: Call, request: CompletionRequest) -> tuple[list[list[int]], list[str]]:
        """Token ids and text of every prompt, checked against the context."""
        tok = call.engine.tokenizer
        ids_list, texts = [], []
        for prompt in request.prompts():
            if isinstance(prompt, str):
                ids = tok.encode(prompt)
                text = prompt
            else:
                self.ctx.check_tokens(call, prompt)
                ids, text = list(prompt), (tok.decode(prompt) if request.echo else "")
            ids_list.append(ids)
            texts.append(text)
        return ids_list, texts

    async def create(self, call: Call, request: CompletionRequest) -> CompletionResponse | Stream:
        prompts, prompt_texts = self.prepare(call, request)
        longest = max(len(p) for p in prompts)
        max_tokens = self.ctx.max_tokens(call, longest, request.max_tokens)
        params = request.sampling_params(max_tokens)
        call.prompt_tokens = sum(len(p) for p in prompts)
        rid = new_id("cmpl")
        gens = [self.ctx.generate(call, ids, params, f"{rid}-{i}") for i, ids in enumerate(prompts)]
        if request.stream:
            return await Stream.open(self._stream(call, request, rid, gens, prompt_texts))
        finals = [await last_output(g) for g in gens]
        return self._response(call, request, rid, finals, prompt_texts)

    def _response(self, call, request, rid, finals: list[RequestOutput], prompt_texts) -> CompletionResponse:
        choices = []
        for p, final in enumerate(finals):
            if final.metrics is not None and final.metrics.first_token_latency:
                call.ttft = min(call.ttft or 1e9, final.metrics.first_token_latency)
            for out in sorted(final.outputs, key=lambda o: o.index):
                text = (prompt_texts[p] if request.echo else "") + out.text
                call.output_tokens += len(out.token_ids)
                call.texts.append(out.text)
                choices.append(
                    CompletionChoice(
                        index=p * request.n + out.index,
                        text=text,
                        logprobs=_logprobs(call, out, request.logprobs) if request.logprobs is not None else None,
                        finish_reason=out.finish_reason,
                    )
                )
        return CompletionResponse(id=rid, model=call.model_name, choices=choices, usage=call.usage())

    async def _stream(self, call, request, rid, gens, prompt_texts) -> AsyncIterator[str]:
        created = int(time.time())
        texts: dict[int, list[str]] = {}

        def chunk(choices: list[CompletionChoice], **extra) -> str:
            return sse(CompletionResponse(id=rid, created=created, model=call.model_name, choices=choices,
                                          **extra).model_dump())

        async for p, out in merge_async_iterators(*gens):
            call.first_token()
            for o in out.outputs:
                index = p * request.n + o.index
                o_text = o.text
                if index not in texts:
                    texts[index] = []
                    if request.echo:
                        o_text = prompt_texts[p] + o.text
                texts[index].append(o.text)
                call.output_tokens += len(o.token_ids)
                logprobs = _logprobs(call, o, request.logprobs) if request.logprobs is not None else None
                yield chunk([CompletionChoice(index=index, text=o_text, logprobs=logprobs, finish_reason=o.finish_reason)])
        call.texts = ["".join(t) for _, t in sorted(texts.items())]
        if request.stream_options and request.stream_options.include_usage:
            yield chunk([], usage=call.usage())


def _logprobs(call: Call, out: CompletionOutput, k: int) -> CompletionLogprobs:
    result = CompletionLogprobs()
    if not out.logprobs:
        return result
    tok = call.engine.tokenizer
    offset = 0
    for token_id, candidates in zip(out.token_ids, out.logprobs, strict=False):
        chosen = candidates.get(token_id)
        text = decoded_token(tok, token_id, chosen)
        result.tokens.append(text)
        result.token_logprobs.append(json_logprob(chosen.logprob) if chosen else None)
        result.top_logprobs.append(
            {decoded_token(tok, tid, lp): json_logprob(lp.logprob) for tid, lp in candidates.items() if lp.rank is not None and lp.rank <= k}
        )
        result.text_offset.append(offset)
        offset += len(text)
    return result
