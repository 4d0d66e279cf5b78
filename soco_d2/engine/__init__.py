"""Training engine: one Trainer for pretraining and fine-tuning, hooks, config setup."""
from .hooks import IterationSeedHook, TargetEMAHook, WeightDriftHook
from .setup import check_detector_data, count_train_images, load_cfg, setup_cfg
from .train_loop import NonFiniteLossError, build_step_runner
from .trainer import Trainer, is_pretraining

__all__ = [
    "Trainer",
    "setup_cfg",
    "load_cfg",
    "count_train_images",
    "TargetEMAHook",
    "IterationSeedHook",
    "WeightDriftHook",
    "NonFiniteLossError",
    "build_step_runner",
    "check_detector_data",
    "is_pretraining",
]
