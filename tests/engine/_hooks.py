"""Hooks shared by the engine tests."""
from detectron2.engine import HookBase


class KillAfter(HookBase):
    """Raises after the given iteration's hooks (checkpoint included) ran, like a kill."""

    def __init__(self, iteration: int):
        self.iteration = iteration

    def after_step(self):
        if self.trainer.iter == self.iteration:
            raise KeyboardInterrupt("killed")
