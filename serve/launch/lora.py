"""Building a deployment's stand-in LoRA adapters before its server starts.

The flags and planned paths are serve.command.lora's (pure); whether local adapter
folders fit the base model is the pre-flight's (serve.launch.preflight).
"""

from __future__ import annotations

from serve.command.lora import planned_paths
from serve.config.deployment import DeploymentConfig, StandInAdapter


def adapter_paths(cfg: DeploymentConfig) -> dict[str, str]:
    """Name -> local folder or hub id of every adapter of `cfg`, building the stand-in
    model and its stand-in adapters first if they are not there yet."""
    if cfg.lora is None:
        return {}
    stand_ins = [s for s in cfg.lora.adapters.values() if isinstance(s, StandInAdapter)]
    if stand_ins:
        from serve.standin import adapter, tiny_model

        assert cfg.stand_in is not None
        base = tiny_model.ensure(cfg.stand_in.preset, cfg.stand_in.seed)
        for source in stand_ins:
            adapter.ensure(base, source.stand_in.rank, source.stand_in.seed)
    return planned_paths(cfg)
