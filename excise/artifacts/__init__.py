"""The artifact contract: what excise writes and its server reads.

Manifests, the formats of masks, scores, updated weights, sparse checkpoints and LoRA
adapters, the model folders they apply to, and their validation. It imports nothing above
it in excise and no model code (torch only, for the tensor formats); `pyproject.toml`'s
import contracts hold it to that.
"""
