"""What every soft-prompt method shares: a config dataclass and an entry in the method registry.

A method's config says how many positions it takes and how it is initialised or encoded; it is
saved as sorted JSON next to the tensor, so ``config_from_dict(c.to_dict()) == c``. The registry
maps a method name to its config class, the PEFT config it trains with and how it is served
(``embeddings``: vectors in front of the input; ``prefix``: key/value prefixes in every layer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

Serving = Literal["embeddings", "prefix"]
#: Largest number of virtual tokens accepted from any source (training or import).
MAX_VIRTUAL_TOKENS = 512


@dataclass(frozen=True)
class SoftPromptConfig:
    """Common fields; subclasses add their own and validate in ``__post_init__``."""

    method: ClassVar[str] = ""
    num_virtual_tokens: int = 20

    def __post_init__(self) -> None:
        if not 1 <= self.num_virtual_tokens <= MAX_VIRTUAL_TOKENS:
            raise ValueError(f"num_virtual_tokens must be 1 to {MAX_VIRTUAL_TOKENS}")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SoftPromptConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names - {"method"}
        if unknown:
            raise ValueError(f"unknown {cls.method} settings: {', '.join(sorted(unknown))}")
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class MethodSpec:
    name: str
    config: type[SoftPromptConfig]
    #: Builds PEFT's config for a backbone folder: (our config, model path) -> peft config.
    peft_config: Callable[[Any, str], Any]
    serving: Serving
    #: PEFT's name for the method in ``adapter_config.json``.
    peft_type: str


def spec_for(method: str) -> MethodSpec:
    try:
        return METHODS[method]
    except KeyError:
        raise ValueError(
            f"unknown soft-prompt method {method!r}; use one of {', '.join(sorted(METHODS))}"
        ) from None


def config_from_dict(data: dict[str, Any]) -> SoftPromptConfig:
    """The config saved by ``SoftPromptConfig.to_dict`` (its ``method`` picks the class)."""
    return spec_for(str(data.get("method", ""))).config.from_dict(data)


# The methods register last: each imports the classes above.
from soft_prompts.p_tuning import SPEC as _P_TUNING  # noqa: E402
from soft_prompts.prefix_tuning import SPEC as _PREFIX_TUNING  # noqa: E402
from soft_prompts.prompt_tuning import SPEC as _PROMPT_TUNING  # noqa: E402

METHODS: dict[str, MethodSpec] = {s.name: s for s in (_PROMPT_TUNING, _P_TUNING, _PREFIX_TUNING)}
