"""The evaluation study behind docs/evaluation.md: methods × contrasts × positions, each at its best setting,
against a plain and a prompted baseline; plus the strength-calibration check. One command:

    python -m steering compare --model bundled --lang en --report docs/

Honest protocol: settings are chosen on `dev` prompts, and every number in the final table is measured on
separate `test` prompts; vectors are fitted on the train split of the pairs (held-out pairs give the AUC).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .data import BUNDLED, load_prompts
from .evaluate import SweepCell, perplexity, recommend, summarize, sweep
from .files import atomic_write_text
from .generate import GenerationSettings, generate_rows
from .models import LoadedModel
from .pipeline import extract_from_dataset
from .settings import parse_layers
from .steer import Steering
from .vectors import SteeringVector

PROMPTED = {
    "en": "You are a bubbly valley girl. Talk like a gal: say like, totally, literally, OMG, bestie, sooo.",
    "ja": "あなたはあーし系ギャルです。あーし、マジ、ヤバい、ウケる、〜じゃん、を使ってギャル口調で話して。",
}


@dataclass
class Study:
    lang: str
    layer_options: list[str]
    strengths: list[float]
    dev_prompts: list[str]
    test_prompts: list[str]
    max_new_tokens: int = 40
    repetition_penalty: float = 1.3
    rows: list[dict] = field(default_factory=list)
    baselines: list[dict] = field(default_factory=list)
    calibration: list[dict] = field(default_factory=list)
    best_vector: SteeringVector | None = None
    best_setting: dict | None = None
    sweeps: dict = field(default_factory=dict)


def _test_replies(loaded, vector, setting, prompts, max_new_tokens, repetition_penalty, system=None) -> list[str]:
    settings = GenerationSettings(
        max_new_tokens=max_new_tokens, system_prompt=system, repetition_penalty=repetition_penalty
    )
    steering = Steering(vector, setting["layers"], 0.0, setting.get("scale", "calibrated")) if vector else None
    strength = setting["strength"] if vector else 0.0
    convs = [[{"role": "user", "content": p}] for p in prompts]
    return generate_rows(loaded, convs, [strength] * len(prompts), steering, settings).texts


def _measure(loaded, prompts, replies, lang) -> dict:
    summary = summarize(replies, lang)
    ppl = [perplexity(loaded, p, r) for p, r in zip(prompts, replies) if r.strip()]
    summary["perplexity"] = sorted(ppl)[len(ppl) // 2] if ppl else None  # median: a few broken replies explode the mean
    return summary


def run_study(
    loaded: LoadedModel,
    lang: str = "en",
    layer_options: Sequence[str] = ("4-8", "8-12", "12-16", "16-20"),
    strengths: Sequence[float] = (1, 2, 3, 4, 6),
    dev: int = 12,
    test: int = 32,
    max_new_tokens: int = 40,
    methods: Sequence[str] = ("mean_diff", "pca_diff", "pca_center"),
    contrasts: Sequence[str] = ("gyaru-vs-standard", "gyaru-vs-casual"),
    positions: Sequence[str] = ("last", "mean"),
    repetition_penalty: float = 1.3,
    log: Callable[[str], None] = print,
) -> Study:
    prompts = load_prompts(lang)
    study = Study(
        lang,
        list(layer_options),
        [0.0, *strengths],
        prompts[:dev],
        prompts[dev : dev + test],
        max_new_tokens,
        repetition_penalty,
    )
    layers_needed = sorted({x for opt in layer_options for x in parse_layers(opt, loaded.num_layers)})
    best_score = None
    for method, contrast, position in itertools.product(methods, contrasts, positions):
        t0 = time.perf_counter()
        vector, _ = extract_from_dataset(loaded, BUNDLED[lang], contrast, layers_needed, method, position)
        cells = sweep(
            loaded,
            vector,
            study.dev_prompts,
            layer_options,
            study.strengths,
            lang,
            max_new_tokens=max_new_tokens,
            repetition_penalty=repetition_penalty,
        )
        best = recommend(cells)
        key = f"{method}/{contrast}/{position}"
        study.sweeps[key] = cells
        row = {"method": method, "contrast": contrast, "position": position}
        if best is not None:
            row["dev_style"] = best.summary["style"]
        if best is None:
            row.update(
                layers="-",
                strength=None,
                note="no setting beat the plain model's style with ≤ 5 % of dev replies broken",
            )
        else:
            setting = {
                "layers": best.layers,
                "strength": best.strength,
                "scale": "calibrated",
                "repetition_penalty": repetition_penalty,
            }
            replies = _test_replies(loaded, vector, setting, study.test_prompts, max_new_tokens, repetition_penalty)
            row.update(
                layers=f"{best.layers[0]}-{best.layers[-1]}",
                strength=best.strength,
                **_measure(loaded, study.test_prompts, replies, lang),
                example=replies[0],
            )
            aucs = [vector.stats[x].get("heldout_auc") for x in best.layers]
            row["heldout_auc"] = sum(aucs) / len(aucs) if all(a is not None for a in aucs) else None
            # The configuration to ship is chosen on the dev prompts too: test numbers only report.
            score = (best.summary["style"], -best.summary["broken_share"])
            if best_score is None or score > best_score:
                best_score, study.best_vector, study.best_setting = score, vector, setting
        study.rows.append(row)
        log(
            f"{key}: {row.get('layers')} @ {row.get('strength')} style {row.get('style', 0):.2f} "
            f"broken {row.get('broken_share', 0):.0%} ({time.perf_counter() - t0:.0f} s)"
        )
    study.baselines = _baselines(loaded, study, lang, log)
    study.calibration = calibration_check(
        loaded,
        study.best_vector,
        study.dev_prompts[:8],
        lang,
        max_new_tokens,
        log,
        repetition_penalty=repetition_penalty,
    )
    return study


def _baselines(loaded, study: Study, lang: str, log) -> list[dict]:
    """Plain, prompted, steered and steered + prompted on the test prompts."""
    out = []
    vec, setting, prompts = study.best_vector, study.best_setting, study.test_prompts
    cases = [("plain model", None, None), ("prompted (system prompt)", None, PROMPTED[lang])]
    if vec is not None:
        cases += [("steered (best setting)", vec, None), ("steered + prompted", vec, PROMPTED[lang])]
    for name, vector, system in cases:
        replies = _test_replies(
            loaded, vector, setting or {}, prompts, study.max_new_tokens, study.repetition_penalty, system
        )
        row = {"case": name, **_measure(loaded, prompts, replies, lang), "example": replies[0]}
        out.append(row)
        log(f"{name}: style {row['style']:.2f} markers {row['marker_share']:.0%} broken {row['broken_share']:.0%}")
    return out


def calibration_check(
    loaded,
    vector,
    prompts,
    lang,
    max_new_tokens,
    log,
    layers=(4, 8, 12, 16, 20),
    strengths=None,
    repetition_penalty: float = 1.0,
) -> list[dict]:
    """Single-layer sweeps under both scales: at which strength does text start breaking, layer by layer?"""
    if vector is None:
        return []
    rows = []
    for scale, grid in (("calibrated", strengths or [1, 2, 4, 8]), ("raw", [16, 32, 64, 128, 256])):
        cells: list[SweepCell] = sweep(
            loaded,
            vector,
            prompts,
            [str(x) for x in layers if x in vector.directions],
            [0.0, *grid],
            lang,
            scale=scale,
            max_new_tokens=max_new_tokens,
            repetition_penalty=repetition_penalty,
        )
        for c in cells:
            rows.append(
                {
                    "scale": scale,
                    "layer": c.layers[0],
                    "strength": c.strength,
                    "broken_share": c.summary["broken_share"],
                    "style": c.summary["style"],
                }
            )
        log(f"calibration sweep ({scale}) done")
    return rows


def _first_break(rows, scale, layer) -> float | None:
    for r in sorted((r for r in rows if r["scale"] == scale and r["layer"] == layer), key=lambda r: r["strength"]):
        if r["strength"] > 0 and r["broken_share"] >= 0.5:
            return r["strength"]
    return None


def study_markdown(study: Study, model_name: str) -> str:
    """The report section for one language."""
    lines = [
        f"## {study.lang}: {model_name}",
        "",
        f"Settings chosen on {len(study.dev_prompts)} dev prompts (layers {', '.join(study.layer_options)} × "
        f"strengths {', '.join(f'{s:g}' for s in study.strengths if s)}, calibrated scale, greedy, "
        f"{study.max_new_tokens} new tokens, repetition penalty {study.repetition_penalty:g} for every case, "
        f"plain included); every number below but 'dev style' is measured on {len(study.test_prompts)} other "
        "(test) prompts. style = marker weight per 100 characters; markers = share of replies with at least one "
        "marker (dev style: the same on the dev prompts, which chose the setting and the vector to ship); "
        "broken = share flagged by the breakage checks; ppl = median perplexity of the reply under the "
        "unsteered model (lower is more fluent; it also penalizes the style itself); AUC = held-out projection "
        "AUC of the chosen layers (a separation sanity check, not evidence that steering works).",
        "",
        "### Methods × contrasts × read positions, each at its best setting",
        "",
        "| method | contrast | position | layers | strength | dev style | style | markers | broken | ppl | AUC |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in study.rows:
        if r.get("strength") is None:
            lines.append(f"| {r['method']} | {r['contrast']} | {r['position']} | – | – | {r['note']} | | | | | |")
            continue
        ppl = f"{r['perplexity']:.1f}" if r.get("perplexity") else "–"
        auc = f"{r['heldout_auc']:.3f}" if r.get("heldout_auc") is not None else "–"
        lines.append(
            f"| {r['method']} | {r['contrast']} | {r['position']} | {r['layers']} | {r['strength']:g} | "
            f"{r['dev_style']:.2f} | {r['style']:.2f} | {r['marker_share']:.0%} | {r['broken_share']:.0%} | {ppl} | {auc} |"
        )
    lines += [
        "",
        "### Baselines on the test prompts",
        "",
        "| case | style | markers | broken | ppl | first test reply |",
        "|---|---|---|---|---|---|",
    ]
    for b in study.baselines:
        ppl = f"{b['perplexity']:.1f}" if b.get("perplexity") else "–"
        example = b["example"][:140].replace("\n", " ").replace("|", "\\|")
        lines.append(
            f"| {b['case']} | {b['style']:.2f} | {b['marker_share']:.0%} | {b['broken_share']:.0%} | "
            f"{ppl} | {example} |"
        )
    if study.calibration:
        layers = sorted({r["layer"] for r in study.calibration})
        lines += [
            "",
            "### Strength calibration: where does text break?",
            "",
            "First strength (single layer, dev prompts) at which at least half the replies are broken. "
            "A scale that means the same push on every layer breaks at about the same value everywhere.",
            "",
            "| scale | " + " | ".join(f"layer {x}" for x in layers) + " |",
            "|---|" + "---|" * len(layers),
        ]
        for scale in ("calibrated", "raw"):
            cells = [_first_break(study.calibration, scale, x) for x in layers]
            lines.append(f"| {scale} | " + " | ".join(f"{c:g}" if c else "> max" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def save_study(study: Study, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"evaluation_{study.lang}.json"
    atomic_write_text(
        path,
        json.dumps(
            {
                "rows": study.rows,
                "baselines": study.baselines,
                "calibration": study.calibration,
                "best_setting": study.best_setting,
            },
            ensure_ascii=False,
            indent=1,
        ),
    )
    return path
