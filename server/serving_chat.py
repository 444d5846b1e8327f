"""POST /v1/chat/completions: the tokenizer's chat template, then generation."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from vllm.outputs import CompletionOutput

from server.errors import BadRequest
from server.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChoiceLogprobs,
    DeltaMessage,
    TokenLogprob,
    TopLogprob,
    json_logprob,
    new_id,
)
from server.serving import Call, ServingContext, decoded_token, last_output
from server.streaming import Stream, sse


class ChatServing:
    endpoint = "chat"

    def __init__(self, ctx: ServingContext) -> None:
        self.ctx = ctx

    def prepare(self, call: Call, request: ChatCompletionRequest) -> list[int]:
        tok = call.engine.tokenizer
        if not call.engine.has_chat_template:
            raise BadRequest(
                f"model {call.variant.name!r} has no chat template; use /v1/completions with a plain prompt",
                param="messages",
            )
        messages = [{"role": m.role, "content": m.text()} for m in request.messages]
        try:
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # jinja errors from a model's own template (e.g. role order rules)
            raise BadRequest(f"the model's chat template rejected the messages: {exc}", param="messages") from None
        return tok.encode(text, add_special_tokens=False)

    async def create(self, call: Call, request: ChatCompletionRequest) -> ChatCompletionResponse | Stream:
        ids = self.prepare(call, request)
        max_tokens = self.ctx.max_tokens(call, len(ids), request.requested_max_tokens())
        params = request.sampling_params(max_tokens)
        call.prompt_tokens = len(ids)
        rid = new_id("chatcmpl")
        gen = self.ctx.generate(call, ids, params, rid)
        if request.stream:
            return await Stream.open(self._stream(call, request, rid, gen))
        final = await last_output(gen)
        if final.metrics is not None and final.metrics.first_token_latency:
            call.ttft = final.metrics.first_token_latency
        choices = []
        for out in sorted(final.outputs, key=lambda o: o.index):
            call.output_tokens += len(out.token_ids)
            call.texts.append(out.text)
            choices.append(
                ChatChoice(
                    index=out.index,
                    message=AssistantMessage(content=out.text),
                    logprobs=chat_logprobs(call.engine.tokenizer, out, request.top_logprobs or 0) if request.logprobs else None,
                    finish_reason=out.finish_reason,
                )
            )
        return ChatCompletionResponse(id=rid, model=call.model_name, choices=choices, usage=call.usage())

    async def _stream(self, call: Call, request: ChatCompletionRequest, rid: str, gen) -> AsyncIterator[str]:
        created = int(time.time())
        texts: dict[int, list[str]] = {}

        def chunk(choices: list[ChatChunkChoice], **extra) -> str:
            return sse(ChatCompletionChunk(id=rid, created=created, model=call.model_name, choices=choices,
                                           **extra).model_dump())

        async for out in gen:
            call.first_token()
            for o in out.outputs:
                if o.index not in texts:
                    texts[o.index] = []
                    yield chunk([ChatChunkChoice(index=o.index, delta=DeltaMessage(role="assistant", content=""))])
                texts[o.index].append(o.text)
                call.output_tokens += len(o.token_ids)
                logprobs = chat_logprobs(call.engine.tokenizer, o, request.top_logprobs or 0) if request.logprobs else None
                yield chunk([ChatChunkChoice(index=o.index, delta=DeltaMessage(content=o.text), logprobs=logprobs,
                                             finish_reason=o.finish_reason)])
        call.texts = ["".join(t) for _, t in sorted(texts.items())]
        if request.stream_options and request.stream_options.include_usage:
            yield chunk([], usage=call.usage())


def chat_logprobs(tok, out: CompletionOutput, k: int) -> ChoiceLogprobs:
    """vLLM's log-probabilities in OpenAI's chat shape: a token vLLM gave none for gets `null`, not a number."""
    content = []
    for token_id, candidates in zip(out.token_ids, out.logprobs or [], strict=False):
        chosen = candidates.get(token_id)
        text = decoded_token(tok, token_id, chosen)
        tops = sorted(
            ((lp.rank, decoded_token(tok, tid, lp), lp.logprob) for tid, lp in candidates.items()
             if lp.rank is not None and lp.rank <= k),
        )
        content.append(
            TokenLogprob(
                token=text,
                logprob=json_logprob(chosen.logprob) if chosen else None,
                bytes=list(text.encode()),
                top_logprobs=[TopLogprob(token=t, logprob=json_logprob(lp), bytes=list(t.encode())) for _, t, lp in tops],
            )
        )
    return ChoiceLogprobs(content=content)
