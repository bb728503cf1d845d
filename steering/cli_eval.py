"""Command line for evaluation: `sweep` (a grid on one vector) and `compare` (the readability study)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .checks import float_arg, int_arg
from .settings import (
    APPLY_TO,
    CONTRASTS,
    DEFAULT_APPLY_TO,
    DEFAULT_READ_POSITION,
    LANGS,
    METHODS,
    MODES,
    SCALES,
    SWEEP_LAYER_OPTIONS,
    SWEEP_STRENGTHS,
    check_layer_spec,
    default_lang,
    parse_layer_options,
    parse_penalties,
    parse_strengths,
)

STUDY_APPLY_TO = ("all", "generated")  # the study compares the two that steer every generated token
STUDY_VECTOR_LAYERS = "10-22"  # the layers the study's vector (and the shipped one) carries


def progress_bar(desc: str):
    """A tqdm bar on stderr driven by (done, total) callbacks."""
    from tqdm import tqdm

    bar = {"bar": None}

    def update(done: int, total: int) -> None:
        if bar["bar"] is None:
            bar["bar"] = tqdm(total=total, desc=desc, file=sys.stderr, leave=False)
        bar["bar"].n = done
        bar["bar"].refresh()
        if done >= total:
            bar["bar"].close()

    return update


def cmd_sweep(args) -> int:
    from .data import check_prompt_lengths, load_prompts
    from .files import check_writable_destination
    from .generate import max_message_chars
    from .metadata import Recommended
    from .models import load_model
    from .sweep import cells_table, recommend, sweep
    from .vector_files import load_vector, save_vector

    options = parse_layer_options(args.layers, "--layers")
    given = args.strengths if args.strengths is not None else SWEEP_STRENGTHS[args.scale]  # '' is an error
    strengths = parse_strengths(given, "--strengths")
    if args.report:  # a report folder that could never be written fails now, not after the whole sweep
        check_writable_destination(args.report, "--report", folder=True)
    vector = load_vector(args.vector)
    if args.recommend and vector.path and vector.path.suffix == ".pt":
        check_writable_destination(vector.path.with_suffix(".json"), "--recommend")
    lang = default_lang(vector.meta.lang, args.model)
    prompts = load_prompts(args.prompts or lang)[: args.max_prompts]
    loaded = load_model(args.model)
    check_prompt_lengths(prompts, args.prompts or lang, max_message_chars(loaded))  # before the grid runs
    cells = sweep(
        loaded,
        vector,
        prompts,
        options,
        strengths,
        lang,
        args.scale,
        args.apply_to,
        args.max_new_tokens,
        args.system,
        progress=None if args.json else progress_bar("sweep"),
        repetition_penalty=args.repetition_penalty,
        mode=args.mode,
    )
    best = recommend(cells)
    rec = Recommended(**best.setting.__dict__) if best else None
    if args.report:
        from .report import write_report

        for path in write_report(cells, args.report, f"sweep_{vector.name}", f"Sweep: {vector.name}"):
            print(f"wrote {path}", file=sys.stderr)
    if args.recommend and rec and vector.path and vector.path.suffix == ".pt":
        from .vector_view import record_evidence

        rec.evidence = f"sweep of {len(prompts)} prompts at {args.max_new_tokens} new tokens"
        vector.meta.recommended = rec
        record_evidence(vector, cells, args.max_new_tokens)  # the app warns past the strength where text broke
        save_vector(vector, vector.path, overwrite=True)
    rec_dict = rec.to_dict() if rec else None
    if args.json:
        print(json.dumps({"cells": cells_table(cells), "recommended": rec_dict}, ensure_ascii=False))
        return 0
    for row in cells_table(cells):
        ratio = row.get("perplexity_ratio")
        print(
            f"layers {row['layers']:>6}  strength {row['strength']:5g}  markers {row['marker_share']:4.0%}  "
            f"broken {row['broken_share']:4.0%}  ppl×plain {'–' if ratio is None else f'{ratio:.2f}'}"
        )
    print(f"recommended: {rec_dict}")
    return 0


def _study_plan(args, lang: str):
    from .study import DEFAULT_STRENGTHS, StudyPlan

    strengths = {m: DEFAULT_STRENGTHS[m] for m in args.modes}
    if args.quick:  # a smoke run: one strength per mode, few prompts, short replies
        return StudyPlan(
            lang,
            args.layers,
            strengths={m: s[1:2] for m, s in strengths.items()},
            apply_to=("generated",),
            repetition_penalties=(1.1,),
            dev=2,
            test=2,
            max_new_tokens=16,
        )
    return StudyPlan(
        lang,
        args.layers,
        strengths=strengths,
        apply_to=tuple(args.apply_to),
        repetition_penalties=tuple(parse_penalties(args.repetition_penalties, "--repetition-penalties")),
        dev=args.dev,
        test=args.test,
    )


def _ship(vector, study, loaded, folder: Path, lang: str) -> Path:
    from .metadata import Recommended
    from .vector_files import save_vector

    setting = study.recommended
    vector.meta.recommended = Recommended(
        **setting.__dict__,
        evidence=f"readability study (docs/evaluation.md): chosen on {len(study.dev_prompts)} dev prompts at "
        f"{study.plan.max_new_tokens} new tokens"
        + (
            ""
            if study.meets_limits
            else "; no setting met the limits (broken ≤ 5 %, perplexity ≤ 2.5× plain): "
            "this is the one with the most replies that are gal and readable"
        ),
    )
    from .vector_view import record_evidence

    record_evidence(vector, study.dev_cells, study.plan.max_new_tokens)  # the app warns past where text broke
    name = "gal_en" if lang == "en" else f"gyaru_{lang}"
    return save_vector(vector, folder / f"{loaded.name.lower()}_{name}.pt", overwrite=True)


def cmd_compare(args) -> int:
    from .data import BUNDLED
    from .files import atomic_write_text, check_writable_destination
    from .models import load_model
    from .pipeline import extract_from_dataset
    from .study import run_study, study_json, study_markdown

    check_layer_spec(args.layers, "--layers")  # a typo fails before the model loads
    plans = {lang: _study_plan(args, lang) for lang in args.lang}
    check_writable_destination(args.report, "--report", folder=True)  # so does a folder that cannot be written
    if args.ship:
        check_writable_destination(args.ship, "--ship", folder=True)
    loaded = load_model(args.model)
    args.report.mkdir(parents=True, exist_ok=True)
    command = f"python -m steering compare {' '.join(sys.argv[2:])}"
    for lang in args.lang:
        vector, _ = extract_from_dataset(
            loaded, BUNDLED[lang], CONTRASTS[0], STUDY_VECTOR_LAYERS, METHODS[0], DEFAULT_READ_POSITION
        )
        study = run_study(loaded, vector, plans[lang], log=lambda m: print(m, file=sys.stderr))
        atomic_write_text(
            args.report / f"evaluation_{lang}.json", json.dumps(study_json(study), ensure_ascii=False, indent=1)
        )
        section = study_markdown(study, loaded.name) + f"\nMeasured with `{command}`.\n"
        atomic_write_text(args.report / f"evaluation_{lang}.md", section)
        if args.ship and study.recommended:
            print(f"shipped {_ship(vector, study, loaded, Path(args.ship), lang)}", file=sys.stderr)
    header = (
        "# Evaluation\n\nStyle and breakage are judged from the reply text (steering/judge.py, steering/fluency.py), "
        "never from the model's own projection onto the vector. One section per language; each says the command "
        "that measured it.\n\n"
    )
    # A hand-written reading of the numbers (evaluation_summary.md) comes first when there is one.
    sections = [
        p.read_text(encoding="utf-8")
        for part in ("summary", "en", "ja")
        if (p := args.report / f"evaluation_{part}.md").exists()
    ]
    atomic_write_text(args.report / "evaluation.md", header + "\n".join(sections))
    print(f"wrote {args.report / 'evaluation.md'}")
    return 0


def add_eval_commands(sub) -> None:
    from .sweep import DEFAULT_SWEEP_TOKENS

    p = sub.add_parser("sweep", help="layer x strength grid over prompts: style, fluency, perplexity, report")
    p.add_argument("--model", default="bundled")
    p.add_argument("--vector", required=True, type=Path)
    p.add_argument("--prompts", default=None, help="prompt file (default: the vector's language set)")
    p.add_argument("--max-prompts", type=int_arg("--max-prompts"), default=16)
    p.add_argument(
        "--layers",
        default=SWEEP_LAYER_OPTIONS,
        help="layer options separated by spaces or ';', each a spec like 8-12, 3,5,7 or -8--1",
    )
    p.add_argument(
        "--strengths",
        default=None,
        help=f"comma-separated, e.g. 0,1,2,4 (default: {SWEEP_STRENGTHS['calibrated']} calibrated, "
        f"{SWEEP_STRENGTHS['raw']} raw)",
    )
    p.add_argument("--scale", default=SCALES[0], choices=SCALES)
    p.add_argument("--mode", default=MODES[0], choices=MODES)
    p.add_argument("--apply-to", "--position", dest="apply_to", default=DEFAULT_APPLY_TO, choices=APPLY_TO)
    p.add_argument("--max-new-tokens", type=int_arg("--max-new-tokens"), default=DEFAULT_SWEEP_TOKENS)
    p.add_argument("--system", default=None, help="system prompt (e.g. a 'talk like a gal' baseline)")
    p.add_argument("--repetition-penalty", type=float_arg("--repetition-penalty", above=0.0), default=1.1)
    p.add_argument("--report", type=Path, default=None, help="folder for CSV/JSON, heatmaps and a markdown summary")
    p.add_argument("--recommend", action="store_true", help="write the recommended setting into the vector's .json")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("compare", help="the readability study: modes x apply_to x repetition penalty vs baselines")
    p.add_argument("--model", default="bundled")
    p.add_argument("--lang", nargs="+", default=["en"], choices=LANGS)
    p.add_argument("--layers", default="12-16", help="the layers every setting steers")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--apply-to", nargs="+", default=list(STUDY_APPLY_TO), choices=APPLY_TO)
    p.add_argument("--repetition-penalties", default="1.1,1.3", help="comma-separated")
    p.add_argument("--dev", type=int_arg("--dev"), default=16, help="prompts used to choose the setting")
    p.add_argument("--test", type=int_arg("--test"), default=32, help="other prompts every reported number comes from")
    p.add_argument("--quick", action="store_true", help="a smoke run: tiny grid, 2+2 prompts, 16 tokens")
    p.add_argument("--report", type=Path, default=Path("docs"))
    p.add_argument("--ship", default=None, help="save each language's vector with its recommended setting here")
    p.set_defaults(func=cmd_compare)
