"""Request and response models in the OpenAI schema (the subset excise serves).

Requests convert themselves to vLLM `SamplingParams`; responses are plain
pydantic models the official `openai` client parses unchanged.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from vllm import SamplingParams
from vllm.sampling_params import RequestOutputKind

from server.errors import BadRequest

MAX_N = 16
MAX_STOP = 4


def json_logprob(value: float) -> float:
    """JSON has no -inf: a token of probability zero gets -9999.0, as in OpenAI's and vLLM's own servers."""
    return max(value, -9999.0)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class StreamOptions(BaseModel):
    include_usage: bool = False


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class _Request(BaseModel):
    # Unknown fields are ignored, as OpenAI's API does with most clients' extras.
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: Annotated[str, Field(max_length=256)] | Annotated[list[Annotated[str, Field(max_length=256)]], Field(max_length=MAX_STOP)] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    user: str | None = Field(None, max_length=256)
    # vLLM extension: generate exactly max_tokens (benchmarks, load tests).
    ignore_eos: bool = False

    def _sampling(self, *, max_tokens: int, logprobs: int | None, stream: bool) -> SamplingParams:
        if self.n > 1 and self.temperature == 0:
            raise BadRequest("n > 1 needs temperature > 0 (greedy decoding gives n identical choices)", param="n")
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        return SamplingParams(
            n=self.n,
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=[s for s in stops if s],
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            logprobs=logprobs,
            ignore_eos=self.ignore_eos,
            # Delta outputs when streaming; otherwise only the finished result,
            # which saves detokenizing and copying every step twice.
            output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
        )


class CompletionRequest(_Request):
    prompt: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=32)]
        | Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
        | Annotated[list[Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]], Field(min_length=1, max_length=32)]
    )
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and isinstance(p[0], int):
            return [p]
        return list(p)

    def sampling_params(self, max_tokens: int) -> SamplingParams:
        return self._sampling(max_tokens=max_tokens, logprobs=self.logprobs, stream=self.stream)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def sampling_params(self, max_tokens: int) -> SamplingParams:
        if self.top_logprobs is not None and not self.logprobs:
            raise BadRequest("top_logprobs needs logprobs=true", param="top_logprobs")
        k = (self.top_logprobs or 0) if self.logprobs else None
        return self._sampling(max_tokens=max_tokens, logprobs=k, stream=self.stream)


# --- responses -----------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] = []
    text_offset: list[int] = []


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class CompletionResponse(BaseModel):
    """Also each chunk of a stream (as in OpenAI's API): the choices' text of one step, usage in the last."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(BaseModel):
    token: str
    logprob: float | None  # None: vLLM returned no log-probability for this token
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] = []


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage


class DeltaMessage(BaseModel):
    """What a stream chunk adds to a message: the role once, in the first chunk, then text."""

    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _only_what_changed(self, handler) -> dict:
        return {key: value for key, value in handler(self).items() if value is not None}


class ChatChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "excise"
    # excise extensions: what the name serves (names, never server paths).
    kind: Literal["variant", "experiment"]
    base: str | None = None
    correction: bool | None = None  # a LoRA correction on its base's engine
    verified: bool | None = None  # False: served with `verify: false`, its artifact unchecked
    arms: list[str] | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class CorrectionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    base: str = Field(min_length=1, max_length=64, description="Variant whose engine serves the correction.")
    path: str = Field(
        min_length=1, max_length=4096,
        description="LoRA artifact folder, relative to the server's corrections root (EXCISE_CORRECTIONS_ROOT).",
    )


class CorrectionResponse(BaseModel):
    name: str
    base: str
    path: str
    lora_rank: int


class ArmReport(BaseModel):
    variant: str
    weight: float
    requests: int
    latency_p50_s: float | None
    latency_p95_s: float | None
    ttft_p50_s: float | None
    scored: int
    mean_toxicity: float | None
    toxic_rate: float | None


class SignificanceTest(BaseModel):
    arms: tuple[str, str]
    test: str
    statistic: float | None
    p_value: float | None
    significant: bool


class ExperimentReport(BaseModel):
    name: str
    arms: list[ArmReport]
    # The first arm is the control; each other arm is tested against it.
    toxic_rate_tests: list[SignificanceTest]
    latency_tests: list[SignificanceTest]
    alpha: float
