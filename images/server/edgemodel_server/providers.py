"""Which onnxruntime execution providers serve an accelerator: pure decisions, no I/O.

`choose` picks providers from what the onnxruntime build offers; `confirm` checks what a
session really uses (onnxruntime quietly drops a provider whose libraries fail to load).
Both return either `Selected` (serve, maybe with a fell-back note) or `Unavailable` (do
not serve; readiness reports the reason).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"

# Preferred providers per accelerator, best first, with their provider options. The
# provider that must be present for the accelerator to count as served is REQUIRED.
PREFERENCES: Mapping[str, tuple[tuple[str, Mapping[str, str]], ...]] = {
    "gpu": ((TENSORRT, {}), (CUDA, {})),
    "npu": ((OPENVINO, {"device_type": "NPU"}),),
    "cpu": ((CPU, {}),),
}
REQUIRED: Mapping[str, str] = {"gpu": CUDA, "npu": OPENVINO, "cpu": CPU}


@dataclass(frozen=True)
class Selected:
    """Providers to hand to onnxruntime, best first; `note` says why it is not the plan."""

    accelerator: str
    providers: tuple[str, ...]
    options: tuple[Mapping[str, str], ...]
    note: str = ""
    fell_back: bool = False

    @property
    def primary(self) -> str:
        return self.providers[0]


@dataclass(frozen=True)
class Unavailable:
    """The accelerator cannot be served; `reason` is what readiness reports."""

    accelerator: str
    reason: str
    available: tuple[str, ...] = field(default=())


Choice = Selected | Unavailable


def _fallback(accelerator: str, problem: str) -> Selected:
    return Selected(
        accelerator=accelerator,
        providers=(CPU,),
        options=({},),
        note=f"{problem}; fell back to {CPU} because EDGEMODEL_CPU_FALLBACK=true",
        fell_back=True,
    )


def choose(accelerator: str, available: Sequence[str], cpu_fallback: bool) -> Choice:
    """Pick the providers for `accelerator` given onnxruntime.get_available_providers()."""
    if accelerator not in PREFERENCES:
        raise ValueError(f"unknown accelerator {accelerator!r}; expected cpu, gpu or npu")
    offered = set(available)
    required = REQUIRED[accelerator]
    if required in offered:
        wanted = [(name, dict(opts)) for name, opts in PREFERENCES[accelerator] if name in offered]
        if CPU not in (name for name, _ in wanted):
            wanted.append((CPU, {}))  # onnxruntime runs unsupported operators here
        return Selected(
            accelerator=accelerator,
            providers=tuple(name for name, _ in wanted),
            options=tuple(opts for _, opts in wanted),
        )
    problem = f"{required} is not available in this onnxruntime build"
    if cpu_fallback and CPU in offered:
        return _fallback(accelerator, problem)
    hint = "; set EDGEMODEL_CPU_FALLBACK=true to serve on CPU" if accelerator != "cpu" else ""
    return Unavailable(accelerator=accelerator, reason=problem + hint, available=tuple(available))


def confirm(choice: Selected, in_session: Sequence[str], cpu_fallback: bool) -> Choice:
    """Check the providers a created session reports (InferenceSession.get_providers())."""
    if not in_session:
        return Unavailable(choice.accelerator, "the onnxruntime session reports no provider")
    if in_session[0] == choice.primary:
        return choice
    problem = f"{choice.primary} could not be initialised (the session uses {in_session[0]})"
    if cpu_fallback and in_session[0] == CPU:
        return _fallback(choice.accelerator, problem)
    return Unavailable(
        accelerator=choice.accelerator,
        reason=f"{problem}; set EDGEMODEL_CPU_FALLBACK=true to serve on CPU",
        available=tuple(in_session),
    )
