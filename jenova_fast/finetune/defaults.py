"""The settings a run chooses from its data when no flag sets them, each with the reason printed on the plan
line: the context from the longest record, the learning rate from the trained parameter count, the epochs
from the optimizer steps a fact needs, and early stopping once the training answer loss stops falling.
Measured on the recall benchmark (`python -m benchmarks.bench_quality`, benchmarks/README.md).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from jenova_fast.finetune.validate import CONTEXT_MULTIPLE

# Steps for a record's answer to be said back: SmolLM2-135M said back 11 of a dozen facts to their own
# questions and 9 to paraphrases after 48 optimizer steps at lr 1e-4 falling to 1e-5 (60 steps: 12 and 5, an
# answer learned by rote; benchmarks/README.md); a store of a few records gets more epochs to reach them, a
# large one at least MIN_EPOCHS passes.
TARGET_STEPS = 48
MIN_EPOCHS, MAX_EPOCHS = 3, 20
# lr for ~135M trained parameters, scaled by 1/sqrt(parameters) (a wider model takes smaller steps), within
# these bounds
BASE_LR, BASE_PARAMS = 1e-4, 135e6
MIN_LR, MAX_LR = 1e-5, 1e-3
# a LoRA adapter's rate: this many times the rate of training its base whole, for TARGET_STEPS planned steps, and
# 1/sqrt(steps) of that beyond (the best fixed step size for T steps of stochastic gradient descent goes as
# 1/sqrt(T)). On the recall benchmark (SmolLM2-135M, rank 16 on every projection, 48 steps) 5e-4 said back 2 of 12
# facts, 7e-4 7, 1e-3 (10x the base's 1e-4) 12 of 12 and 9 paraphrases, 2e-3 8 and none, 4e-3 diverged. Over 153
# steps of 240 records, 1e-3 made the training loss rise again in the second half and ended at a held-out loss
# of 3.22 nats/answer token, 7e-4 at 2.61, 6e-4 (the rule) 2.66, 5e-4 2.48; `--train last:2` at its rate 2.99. For
# a 7B base the rule gives 1e-4 at 48 steps (QLoRA used 2e-4)
LORA_LR_FACTOR = 10
# the rate falls linearly to this fraction of itself over the planned steps (in process): at a constant 1e-4
# the training loss of the recall benchmark rose again after its 36th step, and 48 steps said back 10 of 12
# facts (6 of 12 paraphrases) against 11 (9) with the fall (benchmarks/README.md)
LR_END = 0.1
# early stopping: the answers are reproduced (mean loss below STOP_LOSS nats/token), or the training loss fell
# less than MIN_GAIN for PATIENCE epochs in a row. At 0.05 the falling rate stopped the recall benchmark after
# 30 of 60 steps, with 9 of 12 facts said back
STOP_LOSS = 0.01
MIN_GAIN, PATIENCE = 0.02, 2


def context(longest: int, model_context: int) -> tuple[int, str]:
    """The smallest multiple of 256 whose window (n_ctx + 1 tokens) holds the longest record, up to the
    model's own context."""
    need = max(CONTEXT_MULTIPLE, -(-max(longest - 1, 1) // CONTEXT_MULTIPLE) * CONTEXT_MULTIPLE)
    cap = max(CONTEXT_MULTIPLE, model_context // CONTEXT_MULTIPLE * CONTEXT_MULTIPLE) if model_context else need
    if need > cap:
        return cap, f"the longest record has {longest} tokens, more than the model's context ({model_context}): " \
                    "longer records are cut"
    return need, f"the longest record has {longest} tokens"


def _rate(trained_params: int) -> float:
    return min(MAX_LR, max(MIN_LR, BASE_LR * math.sqrt(BASE_PARAMS / max(trained_params, 1))))


def learning_rate(trained_params: int) -> tuple[float, str]:
    return float(f"{_rate(trained_params):.1g}"), f"{trained_params / 1e6:.1f}M trained parameters"


def lora_learning_rate(base_params: int, planned_steps: int) -> tuple[float, str]:
    """The adapter's rate, from the parameters training the base whole would train (not the adapter's own) and
    the steps planned."""
    steps = max(planned_steps, 1)
    longer = min(1.0, math.sqrt(TARGET_STEPS / steps))
    lr = float(f"{max(MIN_LR, _rate(base_params) * LORA_LR_FACTOR * longer):.1g}")
    return lr, (f"LoRA: {LORA_LR_FACTOR}x the rate for training the base's {base_params / 1e6:.1f}M parameters whole"
                + (f", x sqrt({TARGET_STEPS}/{steps}) for {steps} planned steps" if longer < 1 else ""))


def epochs(steps_per_epoch: int) -> tuple[int, str]:
    n = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS / max(steps_per_epoch, 1))))
    return n, (f"{steps_per_epoch} steps per epoch, about {TARGET_STEPS} steps to learn a fact "
               f"({MIN_EPOCHS}-{MAX_EPOCHS} epochs); stops early when the training answer loss stops falling")


@dataclass
class EarlyStop:
    """Fed each epoch's mean training loss; says why to stop, or None to go on."""

    losses: list[float] = field(default_factory=list)

    def __call__(self, loss: float) -> str | None:
        self.losses.append(loss)
        if loss < STOP_LOSS:
            return f"the training answer loss is {loss:.3f} nats/token: the answers are learned"
        recent = self.losses[-PATIENCE - 1:]
        if len(recent) == PATIENCE + 1 and all(b > a * (1 - MIN_GAIN) for a, b in itertools.pairwise(recent)):
            return f"the training answer loss fell less than {MIN_GAIN:.0%} for {PATIENCE} epochs"
        return None
