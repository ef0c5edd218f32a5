"""Sum a run of the incumbent's tests (JUnit XML from run.py) by outcome and by cause.

    python tools/incumbent-suite/classify.py /tmp/suite/shim.xml [--baseline /tmp/suite/incumbent.xml] [--top 40]

Each failure is put in the first class of ``RULES`` whose pattern matches the test id or
its error message: (a) our public API lacks a name, argument or behaviour the incumbent's
users call; (b) the test reaches into the incumbent's private internals; (c) a deliberate
refusal or difference (docs/migrating.md); (f) a feature not in this release;
(e) fails with the incumbent too (the machine has no model hub). What no rule matches is
"unsorted", which is read by hand. With ``--baseline`` (the same tests run against the real
``peft``) a test that fails there too is (e) whatever its message.
"""

from __future__ import annotations

import argparse
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

# Methods whose names contain "lora" (so pytest -k "lora" selects their tests) but are not LoRA.
OTHER_METHODS = re.compile(
    r"adalora|tinylora|tiny_lora|gralora|randlora|rand_lora|glora|vblora|unilora|uni_lora|delora|xlora|road|"
    r"loha|lokr|vera|boft|oft|hra|miss|shira|c3a|fourierft|lntuning|poly|waveft|cartridge|peanut|psoft|deft",
    re.IGNORECASE,
)
# Attributes of the incumbent's layer classes that tests read (peft-core's layers differ).
_LAYER_ATTRIBUTES = "|".join(
    ("lora_", "ia3_", "scaling", "merged_adapters", "disable_adapters", "update_layer", "r'", "kwargs", "use_dora")
)
# (class, cause, pattern on "test id :: message"); the first match wins.
RULES: list[tuple[str, str, str]] = [
    # (f) features not in this release (docs/migrating.md, "Not there (yet)")
    ("f", "LoRA variants (aLoRA, Arrow, MonteCLoRA, KaSA...)", r"alora|arrow|monteclora|kasa|velora|bdlora"),
    ("f", "layer_replication", r"layer_replication"),
    ("f", "runtime_config / ephemeral GPU offload", r"runtime_config|ephemeral"),
    ("f", "init from data or a quantizer (CorDA, EVA, LoftQ)", r"corda|eva_|loftq"),
    ("f", "bitsandbytes tests (CUDA only in the incumbent's suite)", r"bnb|bitsandbytes|8bit|4bit"),
    # (b) private internals of the incumbent
    ("b", "unmapped private name (UnmappedName)", r"UnmappedName|has no peft-core equivalent"),
    ("b", "private layer attribute", r"has no attribute '(_|" + _LAYER_ATTRIBUTES + ")"),
    ("b", "the tuner's parameter prefix (model.prefix)", r"has no attribute 'prefix'"),
    (
        "b",
        "a layer's own methods (set_adapter, enable_adapters, get_base_layer...)",
        r"has no attribute '(set_adapter|enable_adapters|get_base_layer|adapter_layer_names|model)'",
    ),
    ("b", "layer attributes in_features/out_features", r"test_in_features_out_features_exposed"),
    ("b", "item assignment into an unmapped private table", r"_UnmappedMeta"),
    ("f", "LoRA on ConvTranspose", r"ConvTranspose"),
    # (c) deliberate refusals or differences (docs/migrating.md)
    ("c", "safe_serialization=False refused (no pickle)", r"safe_serialization=False|adapter_model\.bin"),
    ("c", "mixed adapters (PeftMixedModel) refused", r"mixed=True|PeftMixedModel"),
    ("c", "strict loading", r"AdapterLoadError|does not fit"),
    (
        "c",
        "merged adapters: delete/disable refused until unmerged",
        r"MergeError: adapter.* is merged|adapters are merged",
    ),
    ("c", "peft_type is a string, not the PeftType enum", r"'str' object has no attribute 'value'|PeftType"),
    ("c", "configs are pydantic models (dataclasses.replace)", r"replace\(\) should be called on dataclass"),
    ("c", "an unknown non-off config key is refused", r"unknown key 'foobar'"),
    ("c", "IA3 feedforward_modules checked on matched modules", r"feedforward"),
    ("c", "two adapters with their own modules_to_save copy active", r"own copy of a module in modules_to_save"),
    (
        "c",
        "no hub: push_to_hub, model card base_model",
        r"test_attributes_parametrized|test_save_pretrained\b|push_to_hub",
    ),
    ("c", "set_adapter leaves trainability alone", r"to require gradients"),
    ("c", "our error messages (a match= on the incumbent's text)", r"Regex pattern did not match|does not exist"),
]


def _outcome(case: ET.Element) -> tuple[str, str]:
    for tag in ("failure", "error"):
        node = case.find(tag)
        if node is not None:
            return tag, (node.get("message") or node.text or "").strip().splitlines()[0][:300] if (
                node.get("message") or node.text
            ) else ""
    if case.find("skipped") is not None:
        return "skipped", ""
    return "passed", ""


def read(path: Path) -> dict[str, tuple[str, str]]:
    """test id -> (outcome, first line of the error)."""
    results = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        results[test_id] = _outcome(case)
    return results


def normalise(message: str) -> str:
    """The message with numbers, addresses and paths blanked, for grouping."""
    message = re.sub(r"0x[0-9a-f]+", "0x", message)
    message = re.sub(r"/[\w/.\-]+", "<path>", message)
    return re.sub(r"\d+(\.\d+)?", "N", message)[:160]


def classify(test_id: str, message: str) -> tuple[str, str]:
    text = f"{test_id} :: {message}"
    for klass, cause, pattern in RULES:
        if re.search(pattern, text):
            return klass, cause
    return "?", normalise(message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path)
    parser.add_argument("--baseline", type=Path, help="the same tests against the real peft")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--list", metavar="CLASS", help="print the test ids of one class (a, b, c, d, e, ?)")
    parser.add_argument("--cause", help="with --list: only failures whose cause contains this text")
    args = parser.parse_args()
    results = {k: v for k, v in read(args.report).items() if not OTHER_METHODS.search(k)}
    baseline = {k: v for k, v in read(args.baseline).items() if not OTHER_METHODS.search(k)} if args.baseline else {}
    print("tests of other methods (selected by name, not LoRA/IA3) are left out of every count")
    print(f"{args.report.name}: {len(results)} tests, {Counter(o for o, _ in results.values())}")
    if baseline:
        print(f"{args.baseline.name}: {len(baseline)} tests, {Counter(o for o, _ in baseline.values())}")
    by_class: Counter[str] = Counter()
    by_cause: Counter[tuple[str, str]] = Counter()
    for test_id, (outcome, message) in results.items():
        if outcome not in ("failure", "error"):
            continue
        if baseline.get(test_id, ("passed", ""))[0] in ("failure", "error"):
            klass, cause = "e", "fails with the incumbent too"
        else:
            klass, cause = classify(test_id, message)
        by_class[klass] += 1
        by_cause[(klass, cause)] += 1
        if args.list == klass and (args.cause is None or args.cause in cause):
            print(f"  {test_id} :: {message[:200]}")
    print("failures by class:", dict(sorted(by_class.items())))
    for (klass, cause), count in by_cause.most_common(args.top):
        print(f"{count:6d}  ({klass}) {cause}")


if __name__ == "__main__":
    main()
