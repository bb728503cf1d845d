"""Command line: python -m steering {extract,info,data,fetch-model,generate,export,sweep,compare}; generate lives
in cli_chat.py, sweep and compare in cli_eval.py."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from . import __version__
from .checks import float_arg, int_arg, seed_arg
from .cli_chat import add_generate_command
from .cli_eval import add_eval_commands, progress_bar
from .settings import (
    CHARS_PER_TOKEN,
    CONTRASTS,
    DEFAULT_READ_POSITION,
    EXPORT_FORMATS,
    MAX_TEXT_TOKENS,
    METHODS,
    QUANTIZE,
    READ_POSITIONS,
    check_layer_spec,
)
from .tables import layer_table


def cmd_extract(args) -> int:
    from .data import load_dataset
    from .models import load_model
    from .pipeline import extract_and_save
    from .vector_files import save_preflight

    # Refuse a bad --out or dataset now, not after loading the model and capturing every pair. (Numbers such as
    # --max-pairs 0 were refused by argparse already.) Texts are checked by characters here (the context is not
    # known yet) and by tokens once the model has loaded, before it runs.
    if args.layers is not None:
        check_layer_spec(args.layers, "--layers")
    save_preflight(args.out, overwrite=args.overwrite, what="--out")
    load_dataset(  # reads only what will be used
        args.data,
        contrast=args.contrast,
        max_entries=args.max_pairs,
        max_text_chars=CHARS_PER_TOKEN * args.max_text_tokens,
    )
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
        read_position=args.read_position,
        max_pairs=args.max_pairs,
        heldout_fraction=args.heldout,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=None if args.json else progress_bar("capture"),
        max_text_tokens=args.max_text_tokens,
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


def cmd_export(args) -> int:
    from .interop import check_export_path, read_vector
    from .vector_files import export_vector

    check_export_path(args.out, args.format, args.overwrite, what="--out")  # before the source is read
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


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line refusals: `error: MESSAGE (see `steering CMD --help`)` on stderr, exit 2.

    A checked number's message already names its flag (`--batch-size must be at least 1, got 0`), so argparse's
    own `argument --batch-size: ` prefix is dropped for it. Subcommand parsers are of this class too."""

    def error(self, message: str):
        message = re.sub(r"^argument (\S+): (?=\1 )", "", message)
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="steering", description="Gyaru steering vectors: extract, inspect, steer.")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("extract", help="extract a vector from a pairs dataset and save it")
    p.add_argument("--model", default="bundled", help="bundled, a hub id, a local folder or a .gguf file")
    p.add_argument("--data", default="en", help="dataset file, or ja / en for the bundled sets")
    p.add_argument("--contrast", default=CONTRASTS[0], choices=CONTRASTS)
    p.add_argument("--layers", default=None, help="e.g. 8-20, 3,5,7 or -8--1 (default: the middle half)")
    p.add_argument("--method", default=METHODS[0], choices=METHODS)
    p.add_argument(
        "--read-position",
        "--position",  # the old name, still accepted
        dest="read_position",
        default=DEFAULT_READ_POSITION,
        choices=READ_POSITIONS,
        help="which reply tokens extraction reads: their mean (default: worked best, docs/evaluation.md) or the last "
        "one (--position: the old name)",
    )
    p.add_argument("--max-pairs", type=int_arg("--max-pairs"), default=None)
    p.add_argument(
        "--heldout",
        type=float_arg("--heldout", minimum=0.0, below=1.0),
        default=0.2,
        help="share of pairs held out for accuracy/AUC (0 <= x < 1)",
    )
    p.add_argument("--seed", type=seed_arg("--seed"), default=0)
    p.add_argument("--batch-size", type=int_arg("--batch-size"), default=16)
    p.add_argument(
        "--max-text-tokens",
        type=int_arg("--max-text-tokens"),
        default=MAX_TEXT_TOKENS,
        help=f"refuse a dataset text longer than this many tokens (default {MAX_TEXT_TOKENS}; never more than the "
        "model's context)",
    )
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

    add_generate_command(sub)

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

    add_eval_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed as `error: ...`
        return exc.code if isinstance(exc.code, int) else 0
    try:
        return args.func(args)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
