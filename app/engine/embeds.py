"""Prompt embeddings for a prompt-tuning soft prompt, built by the server from its own tensors.

The engine embeds token ids itself; a soft prompt's virtual vectors have no ids, so the whole
prompt goes in as embeddings: the learned vectors, then the backbone's own embedding of each token
(exactly what the model would compute from the ids). Both the embedded engine and the fleet use
this; the tensor is only ever one the server loaded, never a client's.
"""

from __future__ import annotations

from typing import Any

from app.engine.base import InvalidEngineRequest, SoftPromptRef


def embedding_table(model: str, dtype: Any) -> Any:
    """The backbone's input embeddings in ``dtype``, read from the checkpoint."""
    from soft_prompts.fingerprint import embedding_matrix

    return embedding_matrix(model).to(dtype)


def prompt_embeds(table: Any, ids: list[int], soft: SoftPromptRef) -> Any:
    """Virtual vectors, then the prompt's token embeddings, as one (positions, hidden) tensor."""
    import torch

    vectors = soft.tensor.to(table.dtype)
    if vectors.dim() != 2 or vectors.shape[1] != table.shape[1]:
        raise InvalidEngineRequest(
            f"soft prompt '{soft.name}' has width {tuple(vectors.shape)}; the model's is {table.shape[1]}"
        )
    embeds = torch.cat([vectors, table[torch.tensor(ids, dtype=torch.long)]], dim=0)
    if not bool(torch.isfinite(embeds).all()):
        raise InvalidEngineRequest(f"soft prompt '{soft.name}' holds non-finite values")
    return embeds
