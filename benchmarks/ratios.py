"""The rows of the ratio table: which two measurements of one scenario are divided, and the target.

Hand-written rows for LoRA's detailed scenarios; generated rows for the life-cycle matrix
(every operation at every size and dtype) and for every method of ``benchmarks.methods``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.methods import METHODS
from benchmarks.scenarios.lifecycle import DTYPES, OPERATIONS, SIZES


@dataclass(frozen=True)
class Ratio:
    """``numerator / denominator`` of two measurements of one scenario (medians or values).

    With ``per``, the row is a ratio of two ratios: ``(numerator / denominator) / (per[0] / per[1])``
    (e.g. what dropout costs us relative to what it costs the incumbent).
    """

    label: str
    scenario: str
    numerator: str
    denominator: str
    target: str = ""  # as printed; empty for context-only rows
    ok: Callable[[float], bool] | None = None
    per: tuple[str, str] | None = None


def at_most(limit: float) -> Callable[[float], bool]:
    return lambda value: value <= limit


def within(center: float, tolerance: float) -> Callable[[float], bool]:
    return lambda value: abs(value - center) <= tolerance


_AT_MOST_090 = ("<= 0.90", at_most(0.90))
_FLOOR_AIM = ("<= 1.10 (aim)", at_most(1.10))


def _training(model: str, scenario: str, aim: bool) -> list[Ratio]:
    return [
        Ratio(f"training step, ours / HF ({model})", scenario, "ours", "hf", *(_AT_MOST_090 if aim else ())),
        Ratio(
            f"training step, ours / floor ({model})",
            scenario,
            "ours",
            "floor",
            *(_FLOOR_AIM if aim else ()),
        ),
        Ratio(f"training step, HF / floor ({model})", scenario, "hf", "floor"),
        Ratio(f"dropout 0.1 step / step, ours ({model})", scenario, "ours_dropout", "ours"),
        Ratio(f"dropout 0.1 step / step, HF ({model})", scenario, "hf_dropout", "hf"),
        Ratio(f"dropout 0.1 step / step, ours with fast_dropout() ({model})", scenario, "ours_fast_dropout", "ours"),
        Ratio(
            f"dropout relative cost, ours / HF ({model})",
            scenario,
            "ours_dropout",
            "ours",
            "<= 1.0",
            at_most(1.0),
            per=("hf_dropout", "hf"),
        ),
    ]


def _step_vs_floor(title: str, scenario: str, where: str, target: float | None = None, prefix: str = "") -> list[Ratio]:
    """A method's training step: ours / HF (against ``target``), ours / floor, HF / floor.

    ``prefix`` starts the scenario's variant names when it holds several methods
    (``loha_ours``, ``loha_hf``, ``loha_floor``).
    """
    ours, hf, floor = (f"{prefix}{name}" for name in ("ours", "hf", "floor"))
    goal = () if target is None else (f"<= {target}", at_most(target))
    return [
        Ratio(f"{title} training step, ours / HF ({where})", scenario, ours, hf, *goal),
        Ratio(f"{title} training step, ours / floor ({where})", scenario, ours, floor),
        Ratio(f"{title} training step, HF / floor ({where})", scenario, hf, floor),
    ]


LORA_RATIOS: list[Ratio] = [
    *_training("llama-tiny", "train_llama", aim=True),
    *_training("GPT-2 Conv1D", "train_gpt2", aim=False),
    Ratio("unmerged forward / base (llama-tiny)", "forward_llama", "ours_unmerged", "base", "<= 1.07", at_most(1.07)),
    Ratio(
        "merged forward / base (llama-tiny)", "forward_llama", "ours_merged", "base", "1.00 +- 0.03", within(1, 0.03)
    ),
    Ratio("second base instance / base (llama-tiny, placement noise)", "forward_llama", "base_copy", "base"),
    Ratio("HF unmerged forward / base (llama-tiny)", "forward_llama", "hf_unmerged", "base"),
    Ratio("HF merged forward / base (llama-tiny)", "forward_llama", "hf_merged", "base"),
    Ratio("unmerged forward / base (GPT-2 Conv1D)", "forward_gpt2", "ours_unmerged", "base"),
    Ratio("merged forward / base (GPT-2 Conv1D)", "forward_gpt2", "ours_merged", "base"),
    Ratio("HF unmerged forward / base (GPT-2 Conv1D)", "forward_gpt2", "hf_unmerged", "base"),
    Ratio(
        "decode, 32 adapters / single adapter", "mixed_decode", "ours_mixed32", "ours_single", "<= 1.3", at_most(1.3)
    ),
    Ratio("decode, 32 adapters, ours / HF", "mixed_decode", "ours_mixed32", "hf_mixed32", "<= 0.4", at_most(0.4)),
    Ratio("decode, 4 adapters / single adapter", "mixed_decode", "ours_mixed4", "ours_single"),
    Ratio("decode, 64 adapters / single adapter", "mixed_decode", "ours_mixed64", "ours_single"),
    Ratio("decode, 64 / 4 adapters (flatness)", "mixed_decode", "ours_mixed64", "ours_mixed4"),
    Ratio("decode, single adapter / base", "mixed_decode", "ours_single", "base"),
    Ratio("HF decode, 32 adapters / single adapter", "mixed_decode", "hf_mixed32", "hf_single"),
    Ratio(
        "prefill, 32 adapters / single adapter",
        "mixed_prefill",
        "ours_mixed32",
        "ours_single",
        "<= 1.05",
        at_most(1.05),
    ),
    Ratio("prefill, 64 / 4 adapters (flatness)", "mixed_prefill", "ours_mixed64", "ours_mixed4"),
    Ratio("prefill, 32 adapters, ours / HF", "mixed_prefill", "ours_mixed32", "hf_mixed32"),
    Ratio("8 x Linear(1024) decode, 32 adapters / single", "mixed_linear_stack", "ours_mixed32", "ours_single"),
    Ratio("8 x Linear(1024) decode, 32 adapters, ours / HF", "mixed_linear_stack", "ours_mixed32", "hf_mixed32"),
    Ratio("peak RSS training, ours / HF", "peak_memory", "ours_peak_rss_mb", "hf_peak_rss_mb", "<= 1.0", at_most(1.0)),
    Ratio("RSS added by training, ours / HF", "peak_memory", "ours_training_rss_mb", "hf_training_rss_mb"),
]

# Targets of the life-cycle rows by (operation, size); the others are reported without one.
# merge_and_unload is the target (#18) everywhere; the others keep the sizes they had.
LIFECYCLE_TARGETS: dict[tuple[str, str], float] = {
    **{("merge_and_unload", size): 0.8 for size in SIZES},
    ("inject", "large"): 1.0,
    ("save", "tiny"): 1.0,
    ("load", "tiny"): 1.0,
}


def _lifecycle() -> list[Ratio]:
    rows = []
    for size, title in SIZES.items():
        for dtype in DTYPES:
            scenario, where = f"lifecycle_{size}_{dtype}", f"{title}, {dtype}"
            for operation in OPERATIONS:
                limit = LIFECYCLE_TARGETS.get((operation, size))
                target = () if limit is None else (f"<= {limit}", at_most(limit))
                rows.append(
                    Ratio(
                        f"{operation}, ours / HF ({where})", scenario, f"ours_{operation}", f"hf_{operation}", *target
                    )
                )
            rows.append(
                Ratio(
                    f"merge_and_unload added peak memory, ours / HF ({where})",
                    scenario,
                    "ours_merge_and_unload_peak_mb",
                    "hf_merge_and_unload_peak_mb",
                    "<= 1.0",
                    at_most(1.0),
                )
            )
            rows.append(Ratio(f"adapter file size, ours / HF ({where})", scenario, "ours_file_bytes", "hf_file_bytes"))
    return rows


def _methods() -> list[Ratio]:
    rows = []
    for case in METHODS:
        scenario, title = f"method_{case.name}", case.title
        rows += [
            Ratio(f"{title} training step, ours / HF", scenario, "ours_step", "hf_step"),
            Ratio(f"{title} training step, ours / floor", scenario, "ours_step", "floor"),
            Ratio(f"{title} unmerged forward, ours / HF", scenario, "ours_forward", "hf_forward"),
            Ratio(f"{title} unmerged forward, ours / base", scenario, "ours_forward", "base"),
        ]
    return rows


# Rows of the methods that have scenarios of their own (benchmarks.methods.DEDICATED).
DEDICATED_RATIOS: list[Ratio] = [
    Ratio(
        "AdaLoRA training step with allocation, ours / HF (llama-tiny)",
        "adalora_step",
        "ours",
        "hf",
        "<= 0.90",
        at_most(0.90),
    ),
    Ratio("AdaLoRA training step, ours / floor (llama-tiny)", "adalora_step", "ours", "floor"),
    Ratio("AdaLoRA training step, HF / floor (llama-tiny)", "adalora_step", "hf", "floor"),
    Ratio("AdaLoRA allocation step alone, ours / HF", "adalora_step", "ours_allocate", "hf_allocate"),
    Ratio("AdaLoRA training step, 8 x 32 tokens, ours / HF", "adalora_step_short", "ours", "hf"),
    *[
        row
        for method, title in (("loha", "LoHa"), ("lokr", "LoKr"), ("oft", "OFT"))
        for row in (
            *_step_vs_floor(title, "train_structured_llama", "llama-tiny", 0.8, prefix=f"{method}_"),
            *_step_vs_floor(title, "train_structured_conv", "ConvNet", 0.8, prefix=f"{method}_"),
            Ratio(f"{title} unmerged forward / base (llama-tiny)", "forward_structured", f"{method}_ours", "base"),
            Ratio(f"HF {title} unmerged forward / base (llama-tiny)", "forward_structured", f"{method}_hf", "base"),
        )
    ],
    Ratio(
        "OFT exact Cayley / Neumann, training step (ours, llama-tiny)",
        "train_structured_llama",
        "oft_ours_exact",
        "oft_ours",
    ),
    Ratio("OFT exact Cayley, ours / HF (llama-tiny)", "train_structured_llama", "oft_ours_exact", "oft_hf_exact"),
]


# DoRA and QLoRA: LoRA variants with scenarios of their own (benchmarks.scenarios.variants).
VARIANT_RATIOS: list[Ratio] = [
    *_step_vs_floor("DoRA", "dora_train", "llama-tiny", 0.85),
    Ratio(
        "DoRA unmerged forward, ours / HF (llama-tiny)",
        "dora_forward",
        "ours_unmerged",
        "hf_unmerged",
        "< 1.0",
        at_most(0.99),
    ),
    Ratio("DoRA unmerged forward / base (llama-tiny)", "dora_forward", "ours_unmerged", "base"),
    Ratio("HF DoRA unmerged forward / base (llama-tiny)", "dora_forward", "hf_unmerged", "base"),
    *_step_vs_floor("QLoRA NF4", "qlora_train", "llama-tiny"),
]


# LoRA's initialisations and the conversion of any adapter to LoRA.
LORA_FEATURE_RATIOS: list[Ratio] = [
    Ratio(
        "injection, 0.9B Llama, incumbent's random stream / fast_init", "inject_init_large", "ours", "ours_fast_init"
    ),
    Ratio("injection, 0.9B Llama, incumbent's random stream, ours / HF", "inject_init_large", "ours", "hf"),
    Ratio("injection, 0.9B Llama, fast_init, ours / HF", "inject_init_large", "ours_fast_init", "hf"),
    Ratio("PiSSA init (full SVD), ours / HF (llama-tiny)", "pissa_init", "ours_pissa", "hf_pissa"),
    Ratio("PiSSA init (pissa_niter_4), ours / HF (llama-tiny)", "pissa_init", "ours_pissa_niter_4", "hf_pissa_niter_4"),
    Ratio("OLoRA init, ours / HF (llama-tiny)", "pissa_init", "ours_olora", "hf_olora"),
    Ratio("conversion to LoRA rank 8, ours / HF (llama-tiny, r=16 all linear)", "convert_to_lora", "ours", "hf"),
]


# Prompt learning: training steps and generation with the KV cache (benchmarks.scenarios.prompt).
PROMPT_RATIOS: list[Ratio] = [
    Ratio("prompt tuning training step, ours / HF", "prompt_step", "ours", "hf", "<= 0.90", at_most(0.90)),
    Ratio("prompt tuning training step, ours / floor (148 positions)", "prompt_step", "ours", "floor"),
    Ratio("prompt tuning training step, HF / floor (148 positions)", "prompt_step", "hf", "floor"),
    Ratio("prefix tuning training step, ours / HF", "prefix_step", "ours", "hf", "<= 0.90", at_most(0.90)),
    Ratio("prefix tuning training step, ours / floor", "prefix_step", "ours", "floor"),
    Ratio("generate with cache, prompt tuning, ours / HF", "generate_cache", "ours_prompt", "hf_prompt"),
    Ratio("generate with cache, prefix tuning, ours / HF", "generate_cache", "ours_prefix", "hf_prefix"),
    Ratio("generate with cache, prompt tuning / base", "generate_cache", "ours_prompt", "base"),
    Ratio("generate with cache, prefix tuning / base", "generate_cache", "ours_prefix", "base"),
]


RATIOS: list[Ratio] = [
    *LORA_RATIOS,
    *_lifecycle(),
    *_methods(),
    *DEDICATED_RATIOS,
    *VARIANT_RATIOS,
    *LORA_FEATURE_RATIOS,
    *PROMPT_RATIOS,
]
