"""Plugin ``torch``: registers torch.optim optimizers (kind ``optimizer``) and LR schedulers (kind ``scheduler``).

Optimizers are built as ``factory(params, **args)`` and schedulers as ``factory(optimizer, **args)``, e.g.
``registry.build("optimizer", "adam", model.parameters(), lr=1e-3)``. Targets are import strings, so
registering imports nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omlcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from omlcore.registry import Registrar

__all__ = ["OPTIMIZERS", "SCHEDULERS", "register_optimizers", "register_schedulers"]

#: name -> (class in torch.optim, summary)
OPTIMIZERS: dict[str, tuple[str, str]] = {
    "adam": ("Adam", "Adam: adaptive moment estimation"),
    "adamw": ("AdamW", "AdamW: Adam with decoupled weight decay"),
    "sgd": ("SGD", "stochastic gradient descent, optionally with (Nesterov) momentum"),
    "rmsprop": ("RMSprop", "RMSprop: gradients scaled by a running average of their square"),
    "adagrad": ("Adagrad", "Adagrad: per-parameter rates from accumulated squared gradients"),
    "adadelta": ("Adadelta", "Adadelta: Adagrad with a decaying window of squared gradients"),
    "adamax": ("Adamax", "Adamax: Adam with the infinity norm"),
    "radam": ("RAdam", "RAdam: Adam with a rectified adaptive learning rate"),
    "nadam": ("NAdam", "NAdam: Adam with Nesterov momentum"),
    "lbfgs": ("LBFGS", "L-BFGS quasi-Newton method (step() needs a closure)"),
}

#: name -> (class in torch.optim.lr_scheduler, summary)
SCHEDULERS: dict[str, tuple[str, str]] = {
    "step": ("StepLR", "multiply the LR by gamma every step_size epochs"),
    "multistep": ("MultiStepLR", "multiply the LR by gamma at each of the milestones"),
    "exponential": ("ExponentialLR", "multiply the LR by gamma every epoch"),
    "cosine": ("CosineAnnealingLR", "cosine annealing from the initial LR to eta_min over T_max epochs"),
    "cosine_warm_restarts": ("CosineAnnealingWarmRestarts", "cosine annealing with warm restarts (SGDR)"),
    "onecycle": ("OneCycleLR", "the 1cycle policy: warm up to max_lr, then anneal"),
    "plateau": ("ReduceLROnPlateau", "reduce the LR when a monitored metric stops improving"),
    "linear": ("LinearLR", "scale the LR linearly from start_factor to end_factor (warm-up)"),
    "cyclic": ("CyclicLR", "cycle the LR between base_lr and max_lr"),
    "polynomial": ("PolynomialLR", "decay the LR polynomially to zero over total_iters"),
    "constant": ("ConstantLR", "scale the LR by a constant factor for total_iters epochs"),
    "lambda": ("LambdaLR", "set the LR to the initial LR times lr_lambda(epoch)"),
}


@hookimpl
def register_optimizers(registry: Registrar) -> None:
    for name, (class_name, summary) in OPTIMIZERS.items():
        registry.register(name, f"torch.optim:{class_name}", summary=summary)


@hookimpl
def register_schedulers(registry: Registrar) -> None:
    for name, (class_name, summary) in SCHEDULERS.items():
        registry.register(name, f"torch.optim.lr_scheduler:{class_name}", summary=summary)
