"""Command line: python -m steering {extract,info,data,generate,sweep,export,fetch-model}."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__
from .settings import (
    APPLY_TO,
    CONTRASTS,
    DEFAULT_APPLY_TO,
    DEFAULT_READ_POSITION,
    EXPORT_FORMATS,
    LANGS,
    METHODS,
    MODES,
    QUANTIZE,
    READ_POSITIONS,
    SCALES,
    STUDY_LAYER_OPTIONS,
    STUDY_STRENGTHS,
    SWEEP_LAYER_OPTIONS,
    SWEEP_STRENGTHS,
    check_layer_spec,
    default_lang,
    format_layers,
    parse_layer_options,
    parse_strengths,
    resolve_setting,
)
from .tables import layer_table


def _progress_bar(desc: str):
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


def cmd_extract(args) -> int:
    from .data import load_dataset
    from .models import load_model
    from .pipeline import extract_and_save
    from .vector_files import save_preflight

    # Refuse a bad --out or dataset now, not after loading the model and capturing every pair.
    if args.max_pairs is not None and args.max_pairs < 1:
        raise ValueError(f"--max-pairs must be at least 1, got {args.max_pairs}")
    if args.layers is not None:
        check_layer_spec(args.layers, "--layers")
    save_preflight(args.out, overwrite=args.overwrite)
    load_dataset(args.data, contrast=args.contrast, max_entries=args.max_pairs)  # reads only what will be used
    t0 = time.perf_counter()
    loaded = load_model(args.model, quantize=args.quantize, dtype=args.dtype)
    load_s = time.perf_counter() - t0
    vector, timings = extract_and_save(
        loaded,
        args.out,
        overwrite=args.overwrite,
        data=args.data,
        contrast=args.contrast,
        layers=args.layers,
        method=args.method,
        position=args.position,
        max_pairs=args.max_pairs,
        heldout_fraction=args.heldout,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=None if args.json else _progress_bar("capture"),
    )
    timings = {"load_s": load_s, "capture_s": timings["capture_s"], "fit_s": timings["fit_s"]}
    if args.json:
        print(
            json.dumps(
                {
                    "out": str(args.out),
                    "meta": vector.meta.to_dict(),
                    "layers": {str(k): v for k, v in vector.stats.items()},
                    "timings": timings,
                }
            )
        )
    else:
        print(layer_table(vector.stats, vector.meta.suggested_layer))
        print(
            f"saved {args.out} (+ {Path(args.out).with_suffix('.json').name}); "
            f"suggested layer {vector.meta.suggested_layer}; " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items())
        )
    return 0


def cmd_info(args) -> int:
    from .vector_files import load_vector

    vector = load_vector(args.vector)
    if args.json:
        print(
            json.dumps(
                {
                    "path": str(vector.path),
                    "layers": vector.layers,
                    "hidden_size": vector.hidden_size,
                    "meta": vector.meta.to_dict(),
                    "stats": {str(k): v for k, v in vector.stats.items()},
                },
                ensure_ascii=False,
            )
        )
        return 0
    print(
        f"{vector.path}: {len(vector.layers)} layers ({vector.layers[0]}–{vector.layers[-1]}), "
        f"hidden size {vector.hidden_size}"
    )
    if not vector.has_sidecar:
        print("no sidecar .json: a bare reference-style vector (no method, dataset or per-layer stats recorded)")
        print("norms: " + ", ".join(f"{k}:{float(v.norm()):.3f}" for k, v in vector.directions.items()))
        return 0
    meta = vector.meta
    shown = {
        "model": meta.model,
        "method": meta.method,
        "position": meta.position,
        "contrast": meta.contrast,
        "dataset": meta.dataset,
        "pairs": meta.pairs,
        "created": meta.created,
        "recommended": meta.recommended.to_dict() if meta.recommended else None,
    }
    for key, value in shown.items():
        if value is not None:
            print(f"{key:>12}: {value}")
    print(layer_table(vector.stats, meta.suggested_layer))
    return 0


def cmd_data_stats(args) -> int:
    from .data import load_dataset
    from .datastats import dataset_stats, format_stats_table

    stats = dataset_stats(load_dataset(args.file))
    print(json.dumps(stats, ensure_ascii=False) if args.json else format_stats_table(stats))
    return 0


def cmd_fetch_model(args) -> int:
    from .bundled import bundled_model_dir

    print(bundled_model_dir())
    return 0


def _generate_one(loaded, steering, settings, prompt: str, strength: float) -> dict:
    from .generate import generate_batch

    result = generate_batch(loaded, [{"role": "user", "content": prompt}], [0.0, strength], steering, settings)
    tokens = sum(result.token_counts)
    return {
        "prompt": prompt,
        "plain": result.texts[0],
        "steered": result.texts[1],
        "notice": result.notice,
        "timings": {
            "generate_s": result.seconds,
            "tokens": tokens,
            "tokens_per_s": tokens / result.seconds if result.seconds else None,
        },
    }


def _side_by_side(plain: str, steered: str, width: int = 60) -> str:
    import textwrap

    left = textwrap.wrap(plain, width) or [""]
    right = textwrap.wrap(steered, width) or [""]
    rows = [f"{'PLAIN':<{width}} | STEERED"] + ["-" * width + "-+-" + "-" * width]
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        rows.append(f"{a:<{width}} | {b}")
    return "\n".join(rows)


def cmd_generate(args) -> int:
    from .data import load_prompts
    from .generate import GenerationSettings
    from .models import load_model
    from .steer import Steering
    from .vector_files import load_vector
    from .vectors import check_fits

    if not (args.prompt or "").strip() and not args.prompts:  # refused before any model is loaded
        raise ValueError("empty prompt: give a prompt, or --prompts FILE")
    vector = load_vector(args.vector)
    setting = resolve_setting(
        vector,
        args.layers,
        args.strength,
        args.scale,
        args.mode,
        args.apply_to,
        args.repetition_penalty,
        cli=True,
    )
    check_layer_spec(setting.layers, "--layers")  # a typo fails before the model loads
    strength, penalty = setting.strength, setting.repetition_penalty
    loaded = load_model(args.model, quantize=args.quantize, dtype=args.dtype)
    check_fits(vector, loaded.hidden_size, loaded.num_layers, loaded.name)  # "made for another model" comes first
    steering = Steering(vector, setting.layers, strength, setting.scale, apply_to=setting.apply_to, mode=setting.mode)
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=penalty,
        seed=args.seed,
        system_prompt=args.system,
    )
    prompts = load_prompts(args.prompts) if args.prompts else [args.prompt]
    shown = {
        "model": args.model,
        "vector": str(args.vector),
        "layers": steering.layer_list(loaded.num_layers),
        "strength": strength,
        "scale": setting.scale,
        "apply_to": setting.apply_to,
        "mode": setting.mode,
        **settings.__dict__,
    }
    for prompt in prompts:
        row = _generate_one(loaded, steering, settings, prompt, strength)
        if row["notice"]:
            print(f"notice: {row['notice']}", file=sys.stderr)
        if args.json:
            print(json.dumps({**row, "settings": shown}, ensure_ascii=False), flush=True)
        elif args.compare:
            print(_side_by_side(row["plain"], row["steered"]))
        else:
            print(row["steered"])
    return 0


def cmd_export(args) -> int:
    from .interop import read_vector
    from .vector_files import export_vector

    out = export_vector(args.vector, args.format, args.out, overwrite=args.overwrite, model_hint=args.model_hint)
    directions, meta, stats = read_vector(out)  # read back what was written: the file is loadable
    info = {
        "source": str(args.vector),
        "out": str(out),
        "format": args.format,
        "layers": sorted(directions),
        "hidden_size": int(next(iter(directions.values())).numel()),
    }
    if args.format == "gguf":
        from gguf import GGUFReader

        fields = GGUFReader(out).fields
        info["scale"] = fields["steering.scale"].contents()
        info["model_hint"] = fields["controlvector.model_hint"].contents()
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
        return 0
    layers = info["layers"]
    print(
        f"exported {args.vector} -> {out} ({args.format}: {len(layers)} layers {layers[0]}–{layers[-1]}, "
        f"hidden size {info['hidden_size']})"
    )
    if args.format == "gguf":
        strength_note = (
            "each direction is the layer's mean difference (scale 1.0 on one layer = calibrated 1.0)"
            if info["scale"] == "mean_diff"
            else "unit directions (no mean-difference stats recorded)"
        )
        print(
            f"llama.cpp: --control-vector-scaled {out} SCALE [--control-vector-layer-range A B]; "
            f"direction.N steers block N's output; {strength_note}"
        )
    return 0


def cmd_sweep(args) -> int:
    from .data import load_prompts
    from .evaluate import cells_table, recommend, sweep
    from .metadata import Recommended
    from .models import load_model
    from .vector_files import load_vector, save_vector

    options = parse_layer_options(args.layers, "--layers")
    given = args.strengths if args.strengths is not None else SWEEP_STRENGTHS[args.scale]  # '' is an error
    strengths = parse_strengths(given, "--strengths")
    vector = load_vector(args.vector)
    lang = default_lang(vector.meta.lang, args.model)
    prompts = load_prompts(args.prompts or lang)[: args.max_prompts]
    loaded = load_model(args.model)
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
        progress=None if args.json else _progress_bar("sweep"),
        repetition_penalty=args.repetition_penalty,
    )
    best = recommend(cells)
    rec = (
        Recommended(
            layers=format_layers(best.layers),
            strength=best.strength,
            scale=args.scale,
            apply_to=args.apply_to,
            repetition_penalty=args.repetition_penalty,
        )
        if best
        else None
    )
    if args.report:
        from .report import write_report

        for path in write_report(cells, args.report, f"sweep_{vector.name}", f"Sweep: {vector.name}"):
            print(f"wrote {path}", file=sys.stderr)
    if args.recommend and rec and vector.path and vector.path.suffix == ".pt":
        vector.meta.recommended = rec
        save_vector(vector, vector.path, overwrite=True)
    rec_dict = rec.to_dict() if rec else None
    if args.json:
        print(json.dumps({"cells": cells_table(cells), "recommended": rec_dict}, ensure_ascii=False))
    else:
        for row in cells_table(cells):
            print(
                f"layers {row['layers']:>6}  strength {row['strength']:5g}  style {row['style']:6.2f}  "
                f"markers {row['marker_share']:4.0%}  broken {row['broken_share']:4.0%}"
            )
        print(f"recommended: {rec_dict}")
    return 0


def cmd_compare(args) -> int:
    from .compare import run_study, save_study, study_markdown
    from .metadata import Recommended
    from .models import load_model
    from .report import write_report
    from .vector_files import save_vector

    options = parse_layer_options(args.layers, "--layers")  # a typo fails before the model loads
    strengths = parse_strengths(args.strengths, "--strengths")
    loaded = load_model(args.model)
    command = f"python -m steering compare {' '.join(sys.argv[2:])}"
    for lang in args.lang:
        kwargs = (
            {"methods": [METHODS[0]], "contrasts": [CONTRASTS[0]], "positions": [DEFAULT_READ_POSITION]}
            if args.quick
            else {}
        )
        study = run_study(
            loaded,
            lang,
            options,
            strengths,
            args.dev,
            args.test,
            args.max_new_tokens,
            repetition_penalty=args.repetition_penalty,
            log=lambda m: print(m, file=sys.stderr),
            **kwargs,
        )
        save_study(study, args.report)
        section = study_markdown(study, loaded.name) + f"\nMeasured with `{command}`.\n"
        if study.best_vector is not None:
            best = study.best_vector.meta
            best_key = f"{best.method}/{best.contrast}/{best.position}"
            stem = f"sweep_{lang}"
            write_report(study.sweeps[best_key], args.report, stem, f"Dev sweep of the best vector ({best_key})")
            section += (
                f"\nDev sweep of the best vector ({best_key}): [table]({stem}.md)\n\n"
                f"![style]({stem}_style.png) ![broken]({stem}_broken_share.png)\n"
            )
            if args.ship:
                study.best_vector.meta.recommended = Recommended.from_dict(study.best_setting)
                name = "gal_en" if lang == "en" else f"gyaru_{lang}"
                out = Path(args.ship) / f"{loaded.name.lower()}_{name}.pt"
                save_vector(study.best_vector, out, overwrite=True)
                print(f"shipped {out} with recommended {study.best_setting}", file=sys.stderr)
        (args.report / f"evaluation_{lang}.md").write_text(section, encoding="utf-8")
    header = (
        "# Evaluation\n\nStyle and breakage are judged from the reply text (steering/evaluate.py), never from the "
        "model's own projection onto the vector. One section per language; each says the command that measured it."
        "\n\n"
    )
    # A hand-written reading of the numbers (docs/evaluation_summary.md) goes first when it exists.
    # A hand-written reading of the numbers (evaluation_summary.md) comes first when there is one.
    parts = ("summary", "en", "ja")
    sections = [
        p.read_text(encoding="utf-8") for part in parts if (p := args.report / f"evaluation_{part}.md").exists()
    ]
    (args.report / "evaluation.md").write_text(header + "\n".join(sections), encoding="utf-8")
    print(f"wrote {args.report / 'evaluation.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steering", description="Gyaru steering vectors: extract, inspect, steer.")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("extract", help="extract a vector from a pairs dataset and save it")
    p.add_argument("--model", default="bundled", help="bundled, a hub id, a local folder or a .gguf file")
    p.add_argument("--data", default="en", help="dataset file, or ja / en for the bundled sets")
    p.add_argument("--contrast", default=CONTRASTS[0], choices=CONTRASTS)
    p.add_argument("--layers", default=None, help="e.g. 8-20, 3,5,7 or -8--1 (default: the middle half)")
    p.add_argument("--method", default=METHODS[0], choices=METHODS)
    p.add_argument(
        "--position",
        default=DEFAULT_READ_POSITION,
        choices=READ_POSITIONS,
        help="mean over the reply tokens (default: worked best, docs/evaluation.md) or its last token",
    )
    p.add_argument("--max-pairs", type=int, default=None)
    p.add_argument("--heldout", type=float, default=0.2, help="share of pairs held out for accuracy/AUC")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--quantize", default=None, choices=QUANTIZE)
    p.add_argument("--dtype", default=None, help="float32 / bfloat16 / float16 (default: float32 on CPU)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("info", help="print a vector file's metadata and per-layer stats")
    p.add_argument("vector", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    s = data_sub.add_parser("stats", help="entry count, topics, あーし rate, markers and lengths per column")
    s.add_argument("file")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_data_stats)

    p = sub.add_parser("fetch-model", help="download and convert the bundled model into the cache now")
    p.set_defaults(func=cmd_fetch_model)

    p = sub.add_parser("generate", help="chat once, steered (and plain with --compare)")
    p.add_argument("prompt", nargs="?", default=None)
    p.add_argument("--prompts", default=None, help="file with one prompt per line (or JSONL with a prompt field)")
    p.add_argument("--model", default="bundled")
    p.add_argument("--vector", required=True, type=Path)
    p.add_argument(
        "--layers",
        default=None,
        help="e.g. 10-14 (default: the vector's recommended layers, else its suggested layer ±2)",
    )
    p.add_argument("--strength", type=float, default=None, help="negative steers away from gyaru")
    p.add_argument("--scale", default=None, choices=SCALES, help="default: the vector's recommended scale")
    p.add_argument("--mode", default=None, choices=MODES, help="default: the vector's recommended mode, else add")
    p.add_argument(
        "--apply-to",
        "--position",
        dest="apply_to",
        default=None,
        choices=APPLY_TO,
        help=f"where the push applies (--position: the old name); default: the vector's recommended, else "
        f"{DEFAULT_APPLY_TO}",
    )
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument(
        "--repetition-penalty", type=float, default=None, help="default: the vector's recommended value, else 1.0"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--system", default=None, help="system prompt (default: the model template's own)")
    p.add_argument("--quantize", default=None, choices=QUANTIZE)
    p.add_argument("--dtype", default=None)
    p.add_argument("--compare", action="store_true", help="print plain and steered side by side")
    p.add_argument("--json", action="store_true", help="one JSON object per prompt")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("export", help="write a vector as a llama.cpp control vector (.gguf) or .safetensors")
    p.add_argument("vector", type=Path, help="vector file (.pt with its .json, .safetensors or .gguf)")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    p.add_argument("--out", required=True, type=Path, help="output file (.gguf or .safetensors to match --format)")
    p.add_argument(
        "--model-hint",
        default=None,
        help="controlvector.model_hint for gguf (default: the vector's model type, else llama)",
    )
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("sweep", help="layer x strength grid over prompts: style and breakage, heatmaps, report")
    p.add_argument("--model", default="bundled")
    p.add_argument("--vector", required=True, type=Path)
    p.add_argument("--prompts", default=None, help="prompt file (default: the vector's language set)")
    p.add_argument("--max-prompts", type=int, default=16)
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
    p.add_argument("--apply-to", "--position", dest="apply_to", default=DEFAULT_APPLY_TO, choices=APPLY_TO)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--system", default=None, help="system prompt (e.g. a 'talk like a gal' baseline)")
    p.add_argument("--repetition-penalty", type=float, default=1.3)
    p.add_argument("--report", type=Path, default=None, help="folder for CSV/JSON, heatmaps and a markdown summary")
    p.add_argument("--recommend", action="store_true", help="write the recommended setting into the vector's .json")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("compare", help="the evaluation study: methods x contrasts x positions vs baselines")
    p.add_argument("--model", default="bundled")
    p.add_argument("--lang", nargs="+", default=["en"], choices=LANGS)
    p.add_argument("--layers", default=STUDY_LAYER_OPTIONS, help="layer options separated by spaces or ';'")
    p.add_argument("--strengths", default=STUDY_STRENGTHS, help="comma-separated (0 is always added)")
    p.add_argument("--dev", type=int, default=12, help="prompts used to choose settings")
    p.add_argument("--test", type=int, default=32, help="other prompts every reported number comes from")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--repetition-penalty", type=float, default=1.3, help="for every case, plain included")
    p.add_argument("--quick", action="store_true", help="only mean_diff / gyaru-vs-standard / mean")
    p.add_argument("--report", type=Path, default=Path("docs"))
    p.add_argument("--ship", default=None, help="save each language's best vector (with its recommended setting) here")
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
