"""Continuations and perplexity of the dense model and many edited variants of it.

A variant is `None` (dense), a `NeuronScales` (removed or dampened MLP neurons) or a
`MaskSet` (weights or heads). Generation goes through vLLM when it is installed:
every neuron-level variant is written as a weights folder (the dense weights with its
output columns scaled, exactly what its LoRA adapter adds) and swapped into one engine
in turn, so a whole sweep costs one engine start (`excise.evaluation.generation` says
why a weight swap rather than LoRA); weight and head masks are written the same way.
Where vLLM is absent or fails to start, generation falls back to transformers in this
process (the edit applied in place and restored); each fallback is logged and recorded
in `report` for the manifest. An engine that failed once is not started again by the
same evaluator: its failure (an unsupported model, say) would only repeat, at the cost
of an engine start per call. A call's variants always share one backend, so dense and corrected figures
compared on the same prompts come from the same sampler.
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch

from excise.errors import ExciseError
from excise.evaluation.generation import Continuations, SamplingConfig, TransformersGenerator, vllm_available, vllm_generate
from excise.evaluation.perplexity import perplexity
from excise.artifacts.masks import MaskSet
from excise.models.adapters import get_adapter
from excise.models.loading import LoadedModel
from excise.evaluation.neuron_scales import NeuronScales

logger = logging.getLogger(__name__)

Backend = Literal["auto", "vllm", "transformers"]
Variant = NeuronScales | MaskSet | None


class VariantEvaluator:
    def __init__(self, loaded: LoadedModel, backend: Backend = "auto", *, batch_size: int = 64, ppl_batch_size: int = 4):
        if backend == "vllm" and not vllm_available():
            raise ExciseError("--backend vllm asks for vLLM, which is not installed; install the `cpu` or `gpu` extra")
        self.loaded = loaded
        self.adapter = get_adapter(loaded.model)
        self.backend = backend
        self.batch_size = batch_size
        self.ppl_batch_size = ppl_batch_size
        #: what generated each call and why a fallback happened (for the manifest)
        self.report: dict = {"calls": [], "fallbacks": []}
        self._vllm_failure: str | None = None

    @contextmanager
    def applied(self, variant: Variant):
        """The loaded model with `variant`'s edit in place; the dense weights come back afterwards."""
        params = dict(self.loaded.model.named_parameters())
        if isinstance(variant, NeuronScales):
            touched = set(variant.touched(self.adapter))
        elif isinstance(variant, MaskSet):
            # unit biases are zeroed too
            touched = set(variant.weight_masks(self.adapter)) | {n for n in params if n.endswith(".bias")}
        else:
            touched = set()
        saved = {name: params[name].detach().clone() for name in touched}
        try:
            if variant is not None:
                variant.apply(self.adapter)
            yield self.loaded.model
        finally:
            with torch.no_grad():
                for name, value in saved.items():
                    params[name].copy_(value)

    def perplexity(self, variant: Variant, windows: torch.Tensor) -> float:
        with self.applied(variant) as model:
            return perplexity(model, windows, batch_size=self.ppl_batch_size).perplexity

    def generate(self, variants: dict[str, Variant], prompts: list[str], sampling: SamplingConfig) -> dict[str, Continuations]:
        """Continuations of `prompts` for every named variant, all from one backend."""
        reason = self._vllm_refusal(variants)
        if reason is None:
            try:
                generated = self._vllm(variants, prompts, sampling)
                self.report["calls"].append({"backend": "vllm", "variants": len(variants), "prompts": len(prompts)})
                return generated
            except ExciseError as error:
                reason = self._vllm_failure = f"vLLM failed ({error})"
        if self.backend != "transformers":
            logger.warning("generating with transformers instead of vLLM: %s", reason)
            self.report["fallbacks"].append(reason)
        self.report["calls"].append({"backend": "transformers", "variants": len(variants), "prompts": len(prompts)})
        generator = TransformersGenerator(self.loaded.model, self.loaded.tokenizer, batch_size=self.batch_size)
        generated = {}
        for name, variant in variants.items():
            with self.applied(variant):
                generated[name] = generator.generate(prompts, sampling)
        return generated

    def _vllm_refusal(self, variants: dict[str, Variant]) -> str | None:
        """Why vLLM cannot generate these variants (None: it can)."""
        if self.backend == "transformers":
            return "transformers backend asked for"
        if not vllm_available():
            return "vLLM is not installed"
        return self._vllm_failure

    def _vllm(self, variants: dict[str, Variant], prompts: list[str], sampling: SamplingConfig) -> dict[str, Continuations]:
        with tempfile.TemporaryDirectory(prefix="excise-variants-") as folder:
            runs: list[Path | None] = []
            for number, variant in enumerate(variants.values()):
                if variant is None:
                    runs.append(None)
                    continue
                path = Path(folder) / f"variant-{number}"
                with self.applied(variant) as model:
                    model.save_pretrained(path)
                runs.append(path)
            generated = vllm_generate(self.loaded.path, prompts, sampling, runs, kind="weights")
        return dict(zip(variants, generated, strict=True))
