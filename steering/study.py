"""The readability study behind docs/evaluation.md: which steering setting gives gal/gyaru replies that stay
readable at the lengths users read?

    python -m steering compare --model bundled --lang en --report docs/ --ship vectors/

Protocol (honest by construction):
- one vector (mean_diff, gyaru-vs-standard, mean read position) extracted from the bundled dataset;
- dev prompts choose the setting: modes × apply_to × repetition penalty × strengths, greedy, judged at
  256 new tokens by the strict fluency judge; the recommended setting is the highest marker share with at most
  5 % broken and a median perplexity at most 2.5× the plain replies' (sweep.recommend);
- separate test prompts report every number: at 128 and 256 new tokens and on a second turn, against the plain
  model, a "talk like a gal" system prompt, and steering plus that prompt; each mode's best dev setting too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .data import load_prompts
from .models import LoadedModel
from .sweep import Replies, Setting, SweepCell, add_perplexity_ratio, cut, generate_settings, judge_grid, judge_replies
from .sweep import recommend as best_cell

PROMPTED = {
    "en": "You are a bubbly valley girl. Talk like a gal: say like, totally, literally, OMG, bestie, sooo.",
    "ja": "あなたはあーし系ギャルです。あーし、マジ、ヤバい、ウケる、〜じゃん、を使ってギャル口調で話して。",
}
# The second user turn of a conversation (cycled over the test prompts).
FOLLOW_UPS = {
    "en": ["Why is that?", "Can you tell me more?", "What should I do first?", "Any other tips?"],
    "ja": ["それってなんで？", "もっと詳しく教えて！", "まず何からやればいい？", "他にもコツある？"],
}
STUDY_LENGTHS = (128, 256)  # the CLI's default reply length, and twice that
# Per mode, strengths from where style starts to where a probe saw most replies break (docs/evaluation.md).
DEFAULT_STRENGTHS = {"add": (1.0, 2.0, 3.0), "norm_preserving": (2.0, 4.0), "clamp": (1.0, 1.5, 2.0)}
# Strength schedules tried: (mode, strength, half-life in tokens), on generated tokens only.
DEFAULT_SCHEDULES = (("add", 4.0, 32.0),)


@dataclass
class StudyPlan:
    lang: str = "en"
    layers: str = "12-16"
    scale: str = "calibrated"
    strengths: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(DEFAULT_STRENGTHS))
    schedules: tuple[tuple[str, float, float], ...] = DEFAULT_SCHEDULES
    apply_to: tuple[str, ...] = ("all", "generated")
    repetition_penalties: tuple[float, ...] = (1.1, 1.3)
    dev: int = 16
    test: int = 32
    max_new_tokens: int = max(STUDY_LENGTHS)

    def grid(self) -> list[Setting]:
        cells = [Setting(self.layers, 0.0, self.scale, "add", "all", rp) for rp in self.repetition_penalties]
        for mode, strengths in self.strengths.items():
            for apply_to in self.apply_to:
                for rp in self.repetition_penalties:
                    cells += [Setting(self.layers, float(s), self.scale, mode, apply_to, rp) for s in strengths]
        for mode, strength, half_life in self.schedules:
            cells += [
                Setting(self.layers, strength, self.scale, mode, "generated", rp, half_life)
                for rp in self.repetition_penalties
            ]
        return cells


@dataclass
class Study:
    plan: StudyPlan
    dev_prompts: list[str]
    test_prompts: list[str]
    dev_cells: list[SweepCell] = field(default_factory=list)
    recommended: Setting | None = None
    meets_limits: bool = False  # False: no setting met the limits, `recommended` is the most gal-and-readable one
    mode_best: dict[str, Setting | None] = field(default_factory=dict)  # per mode: its recommendation or fallback
    mode_meets: dict[str, bool] = field(default_factory=dict)
    test_rows: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def most_gal_and_readable(cells: Sequence[SweepCell]) -> SweepCell | None:
    """The fallback when no cell meets the limits: most replies that are gal and not broken (ties: fewer broken)."""
    steered = [c for c in cells if not c.setting.plain]
    if not steered:
        return None
    return max(steered, key=lambda c: (c.summary["gal_readable_share"], -c.summary["broken_share"], -c.strength))


def split_prompts(prompts: Sequence[str], dev: int, test: int) -> tuple[list[str], list[str]]:
    """Dev = every 4th prompt, test = two of every other three: both spread over all topics, never overlapping."""
    dev_part = [p for i, p in enumerate(prompts) if i % 4 == 0][:dev]
    test_part = [p for i, p in enumerate(prompts) if i % 4 in (1, 2)][:test]
    return dev_part, test_part


def _turn_one(prompts: Sequence[str]) -> list[list[dict]]:
    return [[{"role": "user", "content": p}] for p in prompts]


def _turn_two(first: Replies, lang: str) -> list[list[dict]]:
    """Each conversation continued with its own reply and a follow-up question."""
    follow = FOLLOW_UPS[lang]
    return [
        [*conv, {"role": "assistant", "content": text}, {"role": "user", "content": follow[i % len(follow)]}]
        for i, (conv, text) in enumerate(zip(first.conversations, first.texts))
    ]


@dataclass(frozen=True)
class Case:
    name: str
    setting: Setting
    system_prompt: str | None = None


def test_cases(study: Study) -> list[Case]:
    rec = study.recommended
    rp = rec.repetition_penalty if rec else study.plan.repetition_penalties[0]
    plain = Setting(study.plan.layers, 0.0, study.plan.scale, "add", "all", rp)
    prompted = PROMPTED[study.plan.lang]
    cases = [Case("plain model", plain), Case("prompted (system prompt)", plain, prompted)]
    if rec:
        cases += [Case("steered (recommended)", rec), Case("steered + prompted", rec, prompted)]
    for mode, setting in study.mode_best.items():
        if setting and setting != rec:
            cases.append(Case(f"best {mode}", setting))
    return cases


def _run_case(loaded, vector, case: Case, conversations, max_new_tokens) -> Replies:
    return generate_settings(loaded, vector, conversations, [case.setting], max_new_tokens, case.system_prompt)[
        case.setting
    ]


def _judged_row(loaded, case: Case, turn: int, length: int, replies: Replies, lang: str) -> dict:
    shown = cut(loaded, replies, length)
    summary = judge_replies(loaded, shown, lang)
    return {
        "case": case.name,
        "setting": case.setting.label(),
        "turn": turn,
        "tokens": length,
        **summary,
        "example": shown.texts[0] if shown.texts else "",
    }


def run_test(loaded: LoadedModel, vector, study: Study, log: Callable[[str], None]) -> list[dict]:
    """Every case on the test prompts: turn 1 and turn 2, judged at each study length."""
    lang, rows = study.plan.lang, []
    for case in test_cases(study):
        t0 = time.perf_counter()
        first = _run_case(loaded, vector, case, _turn_one(study.test_prompts), study.plan.max_new_tokens)
        second = _run_case(loaded, vector, case, _turn_two(first, lang), study.plan.max_new_tokens)
        for turn, replies in ((1, first), (2, second)):
            rows += [_judged_row(loaded, case, turn, n, replies, lang) for n in STUDY_LENGTHS]
        log(f"test {case.name}: {time.perf_counter() - t0:.0f} s")
    plain = {(r["turn"], r["tokens"]): r for r in rows if r["case"] == "plain model"}
    for row in rows:
        add_perplexity_ratio(row, plain.get((row["turn"], row["tokens"]), {}))
    return rows


def run_study(
    loaded: LoadedModel,
    vector,
    plan: StudyPlan,
    log: Callable[[str], None] = print,
    prompts: Sequence[str] | None = None,
) -> Study:
    """Choose the setting on dev prompts at the longest study length, then measure everything on test prompts."""
    t0 = time.perf_counter()
    dev, test = split_prompts(prompts if prompts is not None else load_prompts(plan.lang), plan.dev, plan.test)
    study = Study(plan, dev, test)
    grid = plan.grid()
    log(f"dev: {len(grid)} settings × {len(dev)} prompts at {plan.max_new_tokens} new tokens")
    generated = generate_settings(
        loaded,
        vector,
        _turn_one(dev),
        grid,
        plan.max_new_tokens,
        progress=lambda done, total: log(f"dev rows {done}/{total}"),
    )
    study.dev_cells = judge_grid(loaded, generated, plan.lang)
    best = best_cell(study.dev_cells)
    study.meets_limits = best is not None
    best = best or most_gal_and_readable(study.dev_cells)
    study.recommended = best.setting if best else None
    for mode in plan.strengths:
        mine = [c for c in study.dev_cells if c.setting.plain or c.setting.mode == mode]
        found = best_cell(mine)
        study.mode_meets[mode] = found is not None
        found = found or most_gal_and_readable(mine)
        study.mode_best[mode] = found.setting if found else None
    log(f"recommended: {study.recommended.label() if study.recommended else None}")
    study.test_rows = run_test(loaded, vector, study, log)
    study.seconds = time.perf_counter() - t0
    return study


# --------------------------------------------------------------------------------------------- report


def _pct(value) -> str:
    return "–" if value is None else f"{value:.0%}"


def _num(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _strength(setting: Setting) -> str:
    return f"{setting.strength:g}" + (f", half-life {setting.half_life:g}" if setting.half_life else "")


def _cell(text: str, limit: int = 160) -> str:
    return text[:limit].replace("\n", " ").replace("|", "\\|")


def target_checks(rows: Sequence[dict]) -> list[tuple[str, bool, str]]:
    """The study's targets on the test prompts (turn 1, recommended setting): (target, met, measured)."""
    get = {(r["case"], r["turn"], r["tokens"]): r for r in rows}
    checks = []
    for n in STUDY_LENGTHS:
        r = get.get(("steered (recommended)", 1, n))
        if r is None:
            continue
        checks.append((f"markers ≥ 70 % at {n} tokens", r["marker_share"] >= 0.7, _pct(r["marker_share"])))
        checks.append((f"broken ≤ 5 % at {n} tokens", r["broken_share"] <= 0.05, _pct(r["broken_share"])))
        ratio = r.get("perplexity_ratio")
        checks.append((f"perplexity ≤ 2.5× plain at {n} tokens", ratio is not None and ratio <= 2.5, _num(ratio, 2)))
    both, alone = get.get(("steered + prompted", 1, 256)), get.get(("steered (recommended)", 1, 256))
    if both and alone:
        ok = both["gal_readable_share"] >= alone["gal_readable_share"]
        checks.append(
            (
                "steering + prompt no worse than steering alone (gal and readable, 256 tokens)",
                ok,
                f"{_pct(both['gal_readable_share'])} vs {_pct(alone['gal_readable_share'])}",
            )
        )
    return checks


def study_markdown(study: Study, model_name: str) -> str:
    plan = study.plan
    lines = [
        f"## {plan.lang}: {model_name}",
        "",
        f"Setting chosen on {len(study.dev_prompts)} dev prompts, reported on {len(study.test_prompts)} other "
        f"(test) prompts; layers {plan.layers}, {plan.scale} scale, greedy. Replies are judged from their text: "
        "**markers** = share with at least one gal marker; **gal & readable** = markers and not broken; "
        "**broken** = share the strict fluency judge (steering/fluency.py) flags; **onset** = median token where "
        "broken replies break; **ppl** = median perplexity under the plain model; **×plain** = that over the "
        f"plain replies' median. Study time {study.seconds / 60:.0f} min.",
        "",
        f"### Dev grid ({plan.max_new_tokens} new tokens)",
        "",
        "| mode | apply_to | rep. penalty | strength | markers | gal & readable | broken | onset | ppl | ×plain |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in sorted(
        study.dev_cells, key=lambda c: (c.setting.mode, c.setting.apply_to, c.setting.repetition_penalty, c.strength)
    ):
        s, st = c.summary, c.setting
        mode = "plain" if st.plain else st.mode
        apply_to = "–" if st.plain else st.apply_to
        lines.append(
            f"| {mode} | {apply_to} | {st.repetition_penalty:g} | {_strength(st)} | {_pct(s['marker_share'])} | "
            f"{_pct(s['gal_readable_share'])} | {_pct(s['broken_share'])} | {_num(s['median_onset'], 0)} | "
            f"{_num(s['perplexity'])} | {_num(s.get('perplexity_ratio'), 2)} |"
        )
    rec = study.recommended
    rule = "highest marker share with broken ≤ 5 % and ×plain ≤ 2.5 on dev"
    if study.meets_limits:
        lines += ["", f"**Recommended** ({rule}): {rec.label()}."]
    else:
        lines += [
            "",
            f"**No setting met the limits** ({rule}). Shipped instead: the setting with the most replies that are "
            f"gal and not broken on dev — {rec.label() if rec else 'none'}.",
        ]
    for mode, setting in study.mode_best.items():
        how = "met the limits" if study.mode_meets.get(mode) else "fallback: none met the limits"
        lines.append(f"- best {mode}: {setting.label() if setting else 'none'} ({how})")
    lines += [
        "",
        "### Test prompts",
        "",
        "| case | setting | turn | tokens | markers | gal & readable | broken | onset | ppl | ×plain | first reply |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in study.test_rows:
        lines.append(
            f"| {r['case']} | {r['setting']} | {r['turn']} | {r['tokens']} | {_pct(r['marker_share'])} | "
            f"{_pct(r['gal_readable_share'])} | {_pct(r['broken_share'])} | {_num(r['median_onset'], 0)} | "
            f"{_num(r['perplexity'])} | {_num(r.get('perplexity_ratio'), 2)} | {_cell(r['example'])} |"
        )
    checks = target_checks(study.test_rows)
    if checks:
        lines += [
            "",
            "### Targets (test prompts, turn 1, recommended setting)",
            "",
            "| target | met | measured |",
            "|---|---|---|",
        ]
        lines += [f"| {name} | {'yes' if ok else '**no**'} | {value} |" for name, ok, value in checks]
    broken = [t for r in study.test_rows if r["case"] == "steered (recommended)" for t in r["broken_examples"]]
    if broken:
        lines += ["", "Broken replies of the recommended setting, as the judge saw them (first of each row):", ""]
        lines += [f"- {_cell(t, 300)}" for t in list(dict.fromkeys(broken))[:4]]
    return "\n".join(lines) + "\n"


def study_json(study: Study) -> dict:
    return {
        "plan": {**study.plan.__dict__, "strengths": {k: list(v) for k, v in study.plan.strengths.items()}},
        "dev_prompts": study.dev_prompts,
        "test_prompts": study.test_prompts,
        "dev_cells": [
            {
                **c.setting.__dict__,
                **{k: v for k, v in c.summary.items()},
                "first_reply": c.replies[0] if c.replies else "",
            }
            for c in study.dev_cells
        ],
        "recommended": study.recommended.__dict__ if study.recommended else None,
        "meets_limits": study.meets_limits,
        "mode_best": {m: s.__dict__ if s else None for m, s in study.mode_best.items()},
        "mode_meets": study.mode_meets,
        "test_rows": study.test_rows,
        "seconds": study.seconds,
    }
