"""The `lora:` section of a deployment config: LoRA fine-tunes served beside the base model.

The schema checks what the file says (names, ranks, slots); whether a local adapter
folder exists and fits the base model is the launch pre-flight's (serve.launch.preflight).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The ranks vLLM 0.32 accepts for --max-lora-rank (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class StandInAdapterSpec(BaseModel):
    """A random LoRA adapter built locally with peft on the stand-in (serve.standin.adapter)."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(8, ge=1, description="LoRA rank r of every target layer.")
    seed: int = Field(1, ge=0, description="Random seed: the same seed builds the same weights.")


class StandInAdapter(BaseModel):
    """`{stand_in: {rank: 8, seed: 1}}`: an adapter built for the stand-in, not a file."""

    model_config = ConfigDict(extra="forbid")

    stand_in: StandInAdapterSpec = Field(
        default_factory=StandInAdapterSpec,
        description="Rank and seed of the locally built random adapter.",
    )


class LoraSettings(BaseModel):
    """LoRA fine-tunes served beside the base model, each as a model name of its own."""

    model_config = ConfigDict(extra="forbid")

    adapters: dict[str, str | StandInAdapter] = Field(
        default_factory=dict,
        description="Served name -> a local peft adapter folder (adapter_config.json + "
        "adapter_model.safetensors), a Hugging Face hub id, or {stand_in: {rank, seed}} for "
        "a random adapter built on the stand-in. Each name appears in /v1/models.",
    )
    max_rank: int = Field(
        16,
        description="Largest adapter rank accepted; vLLM reserves every adapter slot at this "
        f"rank (one of {', '.join(map(str, VLLM_LORA_RANKS))}).",
    )
    max_loras: int = Field(
        1, ge=1, description="Adapters usable in one batch (slots kept on the device)."
    )
    max_cpu_loras: int | None = Field(
        None,
        ge=1,
        description="Adapters kept loaded in host memory (at least max_loras); vLLM default: "
        "max_loras.",
    )
    runtime_updates: bool = Field(
        False,
        description="Allow loading and unloading adapters while serving "
        "(POST /v1/load_lora_adapter, /v1/unload_lora_adapter; API key required when set). "
        "vLLM calls this a development feature: adapters loaded so are lost on restart.",
    )

    @field_validator("max_rank")
    @classmethod
    def _vllm_rank(cls, v: int) -> int:
        if v not in VLLM_LORA_RANKS:
            raise ValueError(
                f"{v} is not a rank vLLM accepts: one of {', '.join(map(str, VLLM_LORA_RANKS))}"
            )
        return v

    @model_validator(mode="after")
    def _ranks_and_slots(self) -> LoraSettings:
        for name, source in self.adapters.items():
            if not name or name != name.strip() or any(c.isspace() for c in name):
                raise ValueError(f"adapter name {name!r} must be non-empty, without spaces")
            if isinstance(source, StandInAdapter) and source.stand_in.rank > self.max_rank:
                raise ValueError(
                    f"adapters.{name}: rank {source.stand_in.rank} is above "
                    f"max_rank {self.max_rank}"
                )
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(
                f"max_cpu_loras ({self.max_cpu_loras}) must be at least "
                f"max_loras ({self.max_loras})"
            )
        return self
