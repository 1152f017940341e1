"""The ``nasflow`` command line: ``run``, ``search``, ``train``, ``eval``, ``viz``, ``list``, ``enhance``,
``export``, and the commands plugins register under the ``nasflow.commands`` entry-point group.

Error policy, so that scripts and people can tell "you gave me something wrong" from "nasflow
is broken": a :class:`~nasflow.errors.NasflowError` or an unreadable user path is ONE line
``nasflow: error: ...`` and exit code 2 (argparse usage errors are 2 as well); anything else is
an internal error, exit code 1; Ctrl-C is 130. ``--debug`` adds the traceback.

Exit codes:

* 0 - success.
* 1 - an internal error (a bug: please report it with ``--debug``), or ``nasflow enhance`` finished
  but some input files failed (each named on stderr, then a summary line).
* 2 - a user error: bad path, config, genotype, checkpoint or model file, a locked run folder, an
  output location that is read-only or full. One line on stderr.
* 3 - the training diverged: a loss or weight became NaN or infinite (``TrainingDiverged``). One line
  naming the step, the loss terms and the learning rates to lower; the last good checkpoint is kept.
* 130 - interrupted (Ctrl-C). During a search nasflow finishes the current step, writes a checkpoint
  and says how to ``--resume``; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import argparse
import errno
import sys
import traceback
from pathlib import Path
from typing import Callable, Sequence

from nasflow import __version__
from nasflow.errors import ConfigError, GenotypeError, NasflowError, OutputError, TrainingDiverged

EXIT_OK, EXIT_INTERNAL, EXIT_USER, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
USER_PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
USER_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM")
                        if hasattr(errno, name))  # OSErrors that mean "your disk", not "our bug"

_DESCRIPTION = """\
nasflow: differentiable neural architecture search with pluggable search spaces.

A run searches a cell architecture (a genotype), trains the network it describes and
evaluates it; every stage writes to one run folder."""

_EPILOG = """\
examples:
  nasflow run demo                                    search + train + evaluate the built-in demo
  nasflow run tasks/demo.yaml --set search.epochs=5   override a config value
  nasflow search demo --out runs/s1                   only search: genotype.json + picture
  nasflow train demo --genotype runs/s1/genotype.json train and evaluate a given architecture
  nasflow eval runs/s1-train                          re-evaluate a finished run folder
  nasflow viz runs/planted-X/genotype.json            draw a genotype (.dot, .svg, .png)
  nasflow list ops                                    which candidate ops exist
  nasflow profile-ops distill --channels 3 6          what each op costs on this CPU (ms, FLOPs, params)
  nasflow enhance photos/ -o out/                     enhance photos with a shipped model
  nasflow export ruas-lol -o ruas-lol.ts              a model as one TorchScript (or ONNX) file
  nasflow COMMAND --help                              more about one command

User mistakes print one line and exit with code 2; --debug shows the traceback."""

_RUN_EPILOG = """\
CONFIG is a YAML file, or the name of a built-in task config (e.g. 'demo').

examples:
  nasflow run demo
  nasflow run tasks/demo.yaml --set search.epochs=5 --set train.epochs=2
  nasflow run my.yaml --out runs/try1 --quiet
  nasflow run my.yaml --resume runs/try1            continue after a crash or Ctrl-C

A run checkpoints at every epoch end (and every N steps with --set checkpoint.every_steps=N);
watch it with: tensorboard --logdir runs/"""

_SEARCH_EPILOG = """\
examples:
  nasflow search demo --out runs/s1
  nasflow viz runs/s1/genotype.json
  nasflow train demo --genotype runs/s1/genotype.json --out runs/s1-train"""

_TRAIN_EPILOG = """\
examples:
  nasflow train demo --genotype runs/s1/genotype.json
  nasflow train tasks/ruas.yaml --genotype paper     the genotypes of the RUAS paper
  nasflow train my.yaml --genotype g.yaml --set train.epochs=50 --out runs/g-train"""

_EVAL_EPILOG = """\
examples:
  nasflow eval runs/planted-20261126-101500"""

_VIZ_EPILOG = """\
The .dot file is always written; SVG/PNG need the Graphviz 'dot' program
(apt-get install graphviz / brew install graphviz / conda install graphviz).

examples:
  nasflow viz runs/try1/genotype.json                  -> runs/try1/genotype.{dot,svg,png}
  nasflow viz genotype.json -o pics/ruas --format pdf  -> pics/ruas.{dot,pdf}"""

_LIST_EPILOG = """\
examples:
  nasflow list            every registry, grouped
  nasflow list ops        candidate operations
  nasflow list spaces     search spaces (plugins add more through entry points)"""

_PROFILE_EPILOG = """\
examples:
  nasflow profile-ops distill --channels 3 6                 RUAS cells (IEM 3, NRM 6 channels), 600x400
  nasflow profile-ops darts --channels 16 --size 32x32       a DARTS cell on CIFAR-sized images
  nasflow profile-ops distill --channels 3 --refresh         measure again (another load, another build)

Each op is priced per edge inside a fused cell of the space (the fast path's own kernels): a cell with
the op on every edge is timed against one with the identity on every edge. The table (a small JSON
file keyed by space, op, channels, size, device, threads and torch version, with FLOPs and parameters
beside) is what `search.cost` with `metric: latency` reads."""


# -- argument types -------------------------------------------------------------------------------
OUTPUT_FORMAT_CHOICES = ("png", "jpg", "tif", "webp", "bmp", "same")

_ENHANCE_EPILOG = """\
examples:
  nasflow enhance dark.jpg -o out/                      one photo with the default shipped model
  nasflow enhance photos/ -o out/ --model ruas-lol      a folder; very dark, noisy scenes
  nasflow enhance dark.jpg -o out/ --exposure-bias 0.5  half a stop brighter than the model's choice
  nasflow enhance 'shots/**/*.png' -o out/ --recursive  a glob pattern, sub-folders kept
  nasflow enhance photos/ -o out/ --model runs/ruas-X   a model you trained (run folder or model.pt)
  nasflow enhance video_frames/ -o out/ --device cuda --precision fp16
                                                        a GPU in half precision (CUDA graphs on)
  nasflow list models                                   the shipped models

Unreadable files are reported and skipped; the exit code is 1 when any file failed."""

EXPORT_FORMAT_CHOICES = ("torchscript", "onnx")

_EXPORT_EPILOG = """\
The exported function maps an NCHW float batch in [0, 1] to the clamped enhanced image (what
'nasflow enhance' computes on a whole image); batch, height and width are dynamic. The written
file is loaded back and compared with the model on an image of another size; if it differs by
more than 1e-5 it is deleted and the command fails.

examples:
  nasflow export ruas-lol -o ruas-lol.ts                     TorchScript: torch.jit.load("ruas-lol.ts")
  nasflow export runs/ruas-X -o ruas-x.onnx --format onnx    ONNX (needs: pip install onnx onnxruntime)
  nasflow export model.pt -o model.ts --overwrite            replace an existing file"""


def _positive_int(value: str) -> int:
    number = _non_negative_int(value)
    if number == 0:
        raise argparse.ArgumentTypeError("must be positive")
    return number


def _non_negative_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return number


def _registry_name(value: str) -> str:
    """Accept 'ops', 'op', 'derive-rules': people type singulars and dashes."""
    from nasflow.registries import ALL

    key = value.strip().lower().replace("-", "_")
    for candidate in (key, key + "s"):
        if candidate in ALL:
            return candidate
    raise argparse.ArgumentTypeError(f"unknown registry '{value}' (choose from {', '.join(ALL)})")


def _override(value: str) -> str:
    key, sep, _ = value.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. search.epochs=5), got '{value}'")
    return value


# -- subcommands ----------------------------------------------------------------------------------
def _check_config_arg(config: str) -> None:
    path = Path(config)
    looks_like_name = path.suffix == "" and path.parent == Path(".")  # 'demo': the runner resolves it
    if path.is_dir() and not looks_like_name:
        raise ConfigError(f"config {config} is a directory; give a YAML file")
    if not path.exists() and not looks_like_name:
        raise ConfigError(f"config file not found: {config} (a YAML file, or a built-in name such as 'demo')")


def _cmd_run(args: argparse.Namespace) -> int:
    config = str(args.config)
    _check_config_arg(config)
    from nasflow.run.runner import run_from_file  # lazy: torch and the task plugins load only here

    extra = {}
    if getattr(args, "genotype", None) is not None:
        g = Path(args.genotype)
        if not g.is_file() and not (g.suffix == "" and g.parent == Path(".")):  # bare names: task genotypes
            raise GenotypeError(f"genotype file not found: {args.genotype}")
        extra["genotype"] = args.genotype
    if getattr(args, "search_only", False):
        extra["search_only"] = True
    folder = run_from_file(config, overrides=list(args.overrides), out=args.out, quiet=args.quiet,
                           resume=getattr(args, "resume", None), **extra)
    print(f"run folder: {folder}")
    return EXIT_OK


def _cmd_eval(args: argparse.Namespace) -> int:
    import json

    from nasflow.run.runner import evaluate_run

    metrics = evaluate_run(args.run_dir)
    print(json.dumps(metrics, indent=2))
    return EXIT_OK


def _cmd_viz(args: argparse.Namespace) -> int:
    from nasflow.core.genotype import Genotype
    from nasflow.core.viz import write_genotype_picture

    genotype_path = Path(args.genotype)
    try:
        genotype = Genotype.load(genotype_path)
    except GenotypeError as exc:  # content errors do not say which file; the user needs that
        if str(genotype_path) in str(exc):
            raise
        raise GenotypeError(f"{genotype_path}: {exc}") from exc
    if args.out is None:
        out = genotype_path.with_suffix("")
    elif args.out.endswith(("/", "\\")) or Path(args.out).is_dir():  # a folder: keep the file's name
        out = Path(args.out) / genotype_path.with_suffix("").name
    else:
        out = Path(args.out)
    result = write_genotype_picture(genotype, out, args.formats, keep=[genotype_path])
    for written in [result.dot_path, *result.rendered]:
        print(written)
    if result.hint:
        print(f"nasflow: {result.hint}", file=sys.stderr)
    return EXIT_OK


def _cmd_enhance(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from nasflow.infer.enhance import bound_backend_caches, check_output_folder, plan_jobs, run_jobs

    bound_backend_caches()  # before the first convolution: memory stays flat over a folder
    from nasflow.infer.inference import load_model
    from nasflow.infer.models import default_model_name

    enhancer = load_model(args.model or default_model_name(), device=args.device, tile=args.tile,
                          precision=args.precision, cuda_graphs=args.cuda_graphs, compile=args.compile,
                          exposure_bias=args.exposure_bias)
    for note in enhancer.loaded.notes:
        print(f"nasflow: note: {note}", file=sys.stderr)
    jobs, refused = plan_jobs(args.inputs, args.output, fmt=args.format, recursive=args.recursive,
                              overwrite=args.overwrite)
    if jobs:
        check_output_folder(args.output)  # read-only, full or forbidden: one error before any work
    for path, reason in refused:
        print(f"nasflow: skipped {path}: {reason}", file=sys.stderr)
    quiet = args.quiet or not sys.stderr.isatty()
    progress = lambda items: tqdm(items, desc="enhance", unit="img", disable=quiet, dynamic_ncols=True)  # noqa: E731
    max_pixels = None if args.max_pixels == 0 else args.max_pixels
    report = run_jobs(enhancer.enhance_rgb, jobs, max_pixels=max_pixels, progress=progress)
    for path, note in report.notes:
        print(f"nasflow: note: {path}: {note}", file=sys.stderr)
    for path, reason in report.failed:
        print(f"nasflow: failed {path}: {_one_line(reason)}", file=sys.stderr)
    if report.stopped is not None:  # the output location failed: say so once, with what was done
        raise OutputError(f"{report.stopped}; stopped after writing {len(report.written)} of {len(jobs)} images "
                          f"into {args.output} (each written file is complete)")
    failed = len(report.failed) + len(refused)
    total = len(jobs) + len(refused)
    rate = len(report.written) / report.seconds if report.seconds > 0 else 0.0
    print(f"enhanced {len(report.written)} of {total} images into {args.output} with {enhancer.name} "
          f"({report.seconds:.1f} s, {rate:.2f} images/s)" + (f"; {failed} failed" if failed else ""))
    return EXIT_INTERNAL if failed else EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from nasflow.infer.export import export_model

    result = export_model(args.model, args.output, fmt=args.format, overwrite=args.overwrite)
    print(result.summary())
    return EXIT_OK


def _cmd_plugin(args: argparse.Namespace) -> int:
    return int(args.plugin_command.run(args))


def _size(value: str) -> tuple[int, int]:
    """``HxW`` (e.g. ``400x600``, a 600x400 photo) as two positive ints."""
    try:
        h, w = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW like 400x600, got {value!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"expected positive HxW, got {value!r}")
    return h, w


def _cmd_profile_ops(args: argparse.Namespace) -> int:
    from nasflow.core.cost import CostTable, default_table_path
    from nasflow.core.space import build_space
    from nasflow.infer.profile import FastPathTimer, format_table, profile_space

    if args.device != "cpu":
        raise ConfigError(f"profile-ops measures the CPU fast path only; got --device {args.device}")
    space = build_space(args.space)
    path = Path(args.table) if args.table else default_table_path()
    table = CostTable.load(path)
    h, w = args.size
    timer = FastPathTimer(threads=args.threads, repeats=args.repeats)
    profile_space(space, args.channels, h, w, threads=args.threads, table=table, timer=timer,
                  refresh=args.refresh, rounds=args.rounds)
    table.save(path)
    rows = [e for e in table if e.key.space == space.name and e.key.channels in args.channels
            and (e.key.height, e.key.width) == (h, w) and e.key.threads == args.threads]
    print(format_table(type(table)(rows)))
    print(f"\ntable: {path}")
    return EXIT_OK


def _cmd_list(args: argparse.Namespace) -> int:
    from nasflow.registries import ALL

    names = [args.registry] if args.registry else list(ALL)
    for i, name in enumerate(names):
        rows = ALL[name].describe()
        indent = ""
        if len(names) > 1:
            indent = "  "
            print(("\n" if i else "") + f"{name}:")
        if not rows:
            print(f"{indent}(none registered)")
        width = max((len(n) for n, _ in rows), default=0)
        for entry, description in rows:
            print(f"{indent}{entry:<{width}}  {description}".rstrip())
    return EXIT_OK


# -- parser ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser (public so that docs can render ``--help`` text)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="nasflow", description=_DESCRIPTION, epilog=_EPILOG, formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"nasflow {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    # --debug after the subcommand too; SUPPRESS keeps the subparser from resetting it to False.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def config_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", metavar="CONFIG", help="YAML config file or built-in config name")
        p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[], type=_override,
                       help="override a config value by its dotted key (repeatable)")
        p.add_argument("--out", metavar="DIR", default=None,
                       help="run folder (default: runs/<task>-<time>); a folder holding a checkpoint is resumed")
        p.add_argument("--quiet", action="store_true", help="no progress bars, only the result")

    run = sub.add_parser(
        "run", parents=[common], formatter_class=fmt, epilog=_RUN_EPILOG,
        help="search, train and evaluate from a config",
        description="Run every stage of a config (search -> derive -> train -> evaluate) into one run folder.",
    )
    config_args(run)
    run.add_argument("--resume", metavar="RUN_DIR", default=None,
                     help="continue an interrupted run from RUN_DIR/checkpoints/last.ckpt (same config and --set)")
    run.set_defaults(handler=_cmd_run)

    srch = sub.add_parser(
        "search", parents=[common], formatter_class=fmt, epilog=_SEARCH_EPILOG,
        help="only search: derive and draw the genotype",
        description="Search the architecture of a config and stop: genotype.json, its picture, checkpoints, TensorBoard.",
    )
    config_args(srch)
    srch.add_argument("--resume", metavar="RUN_DIR", default=None,
                      help="continue an interrupted search from RUN_DIR/checkpoints/last.ckpt")
    srch.set_defaults(handler=_cmd_run, search_only=True)

    trn = sub.add_parser(
        "train", parents=[common], formatter_class=fmt, epilog=_TRAIN_EPILOG,
        help="train and evaluate a given genotype (no search)",
        description="Compile a genotype into a plain network, train it with the config's train settings, evaluate "
                    "and export it.",
    )
    config_args(trn)
    trn.add_argument("--genotype", metavar="GENOTYPE", required=True,
                     help="genotype file (.json or .yaml), or a name the task defines (RUAS: paper)")
    trn.set_defaults(handler=_cmd_run)

    evl = sub.add_parser(
        "eval", parents=[common], formatter_class=fmt, epilog=_EVAL_EPILOG,
        help="re-evaluate a finished run folder",
        description="Rebuild a finished run's network from RUN_DIR (config.yaml, model.pt), evaluate it with the "
                    "task's metrics, print them and write RUN_DIR/eval.json.",
    )
    evl.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by nasflow run or nasflow train")
    evl.set_defaults(handler=_cmd_eval)

    viz = sub.add_parser(
        "viz", parents=[common], formatter_class=fmt, epilog=_VIZ_EPILOG,
        help="draw a genotype as a graph picture",
        description="Draw a genotype (JSON or YAML): one box per cell label, edges labelled by op.",
    )
    viz.add_argument("genotype", metavar="GENOTYPE", help="genotype file (.json, .yaml)")
    viz.add_argument("-o", "--out", metavar="OUT", default=None,
                     help="output path without suffix, or a folder (default: next to GENOTYPE)")
    viz.add_argument("--format", dest="formats", metavar="FMT", nargs="+", default=["svg", "png"],
                     help="picture formats rendered by Graphviz (default: svg png)")
    viz.set_defaults(handler=_cmd_viz)

    lst = sub.add_parser(
        "list", parents=[common], formatter_class=fmt, epilog=_LIST_EPILOG,
        help="list registered ops, spaces, strategies, tasks, ...",
        description="List what is registered (built in or installed as a plugin), with one line each.",
    )
    lst.add_argument("registry", nargs="?", type=_registry_name, metavar="WHAT",
                     help="ops, spaces, strategies, tasks, relaxations, derive_rules, hypergradients, losses, "
                          "datasets (default: all)")
    lst.set_defaults(handler=_cmd_list)

    prof = sub.add_parser(
        "profile-ops", parents=[common], formatter_class=fmt, epilog=_PROFILE_EPILOG,
        help="measure what each candidate op of a space costs (ms, FLOPs, parameters)",
        description="Measure the latency of every candidate op of a search space on this CPU through the fast path, "
                    "at given channel counts and image size, store it in the cost table and print it.",
    )
    prof.add_argument("space", metavar="SPACE", help="a search space (nasflow list spaces)")
    prof.add_argument("--device", default="cpu", help="the device to measure on (cpu only, for now)")
    prof.add_argument("--channels", type=_positive_int, nargs="+", default=[3], metavar="C",
                      help="cell channel counts (default: 3)")
    prof.add_argument("--size", type=_size, default=(400, 600), metavar="HxW",
                      help="image height x width (default: 400x600, a 600x400 photo)")
    prof.add_argument("--threads", type=_positive_int, default=1, help="intra-op threads (default: 1)")
    prof.add_argument("--repeats", type=_positive_int, default=15, help="timed forwards per cell (default: 15)")
    prof.add_argument("--rounds", type=_positive_int, default=3,
                      help="interleaved rounds, the median kept (default: 3)")
    prof.add_argument("--table", metavar="PATH", default=None,
                      help="the cost table file (default: $NASFLOW_COST_TABLE or ~/.cache/nasflow/op_costs.json)")
    prof.add_argument("--refresh", action="store_true", help="measure again what the table already holds")
    prof.set_defaults(handler=_cmd_profile_ops)

    enh = sub.add_parser(
        "enhance", parents=[common], formatter_class=fmt, epilog=_ENHANCE_EPILOG,
        help="enhance photos with a trained model (shipped, a model file or a run folder)",
        description="Apply a trained image-to-image model to image files, folders or glob patterns. Output names "
                    "keep the input names (and sub-folders with --recursive); an input is never overwritten. "
                    "Large images run in overlapping tiles whose result equals whole-image processing.",
    )
    enh.add_argument("inputs", metavar="INPUT", nargs="+", help="image files, folders or glob patterns ('*.jpg')")
    enh.add_argument("-o", "--output", metavar="OUT", required=True, help="output folder (created if missing)")
    enh.add_argument("--model", metavar="NAME|PATH", default=None,
                     help="a shipped model (nasflow list models), a model file or a run folder (default: the "
                          "shipped model tagged 'default')")
    enh.add_argument("--format", choices=OUTPUT_FORMAT_CHOICES, default="png",
                     help="output format; 'same' keeps each input's (default: png; 16-bit input stays 16-bit "
                          "in png/tif)")
    enh.add_argument("--recursive", action="store_true", help="descend into sub-folders of folder inputs")
    enh.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    enh.add_argument("--tile", type=_positive_int, default=None, metavar="PIXELS",
                     help="tile size for large images; the output does not depend on it (default: images up to "
                          "1 megapixel whole, larger ones in 512-px tiles on a CPU, 2048-px tiles on a GPU)")
    enh.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                     help="arithmetic on the GPU: fp32 (exact), or fp16/bf16 (faster on large frames; outputs differ "
                          "by about one 8-bit level); CPUs run fp32 (default: fp32)")
    enh.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                     help="replay the network from CUDA graphs, one per image size (default: on with a GPU)")
    enh.add_argument("--compile", action="store_true",
                     help="torch.compile the network (GPU: about 1.5x faster per frame; each new image size first "
                          "compiles for 5-10 s, so for many images of one size)")
    enh.add_argument("--exposure-bias", type=float, default=0.0, metavar="EV",
                     help="exposure compensation in stops, as photo tools have: +1 doubles the gain the model's "
                          "exposure step applies (brighter), -1 halves it (darker); models without such a step "
                          "refuse a bias (default: 0)")
    enh.add_argument("--overwrite", action="store_true", help="replace existing outputs (inputs never)")
    enh.add_argument("--max-pixels", type=_non_negative_int, default=100_000_000, metavar="N",
                     help="refuse images declaring more pixels than this before decoding them (decompression "
                          "bombs); 0 disables the check (default: 100000000)")
    enh.add_argument("--quiet", action="store_true", help="no progress bar")
    enh.set_defaults(handler=_cmd_enhance)

    exp = sub.add_parser(
        "export", parents=[common], formatter_class=fmt, epilog=_EXPORT_EPILOG,
        help="export a trained model as a TorchScript or ONNX file",
        description="Write a trained image-to-image model (shipped, a model file or a run folder) as one "
                    "self-contained TorchScript or ONNX file, then load it back and check it against the model.",
    )
    exp.add_argument("model", metavar="MODEL",
                     help="a shipped model (nasflow list models), a model file or a run folder")
    exp.add_argument("-o", "--output", metavar="OUT", required=True, help="the file to write")
    exp.add_argument("--format", choices=EXPORT_FORMAT_CHOICES, default="torchscript",
                     help="torchscript or onnx (onnx needs the optional onnx package; default: torchscript)")
    exp.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    exp.set_defaults(handler=_cmd_export)

    from nasflow.registries import COMMANDS

    for name in COMMANDS.names():
        command = COMMANDS.get(name)()
        plugin = sub.add_parser(name, parents=[common], formatter_class=fmt, help=command.help,
                                description=getattr(command, "description", command.help),
                                epilog=getattr(command, "epilog", None))
        command.add_arguments(plugin)
        plugin.set_defaults(handler=_cmd_plugin, plugin_command=command)
    return parser


# -- entry point ----------------------------------------------------------------------------------
def _one_line(text: str) -> str:
    """Multi-line messages (YAML parser errors) folded so that stderr gets exactly one line."""
    lines = [line.strip().rstrip(":") for line in text.splitlines()]
    return "; ".join(line for line in lines if line.strip("^ "))  # drop empty lines and caret markers


def _user_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command, return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: keep their codes, return them
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USER)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USER
    debug = bool(getattr(args, "debug", False))
    try:
        return handler(args)
    except KeyboardInterrupt as exc:
        detail = _one_line(str(exc)) if str(exc) else ""
        print(f"nasflow: interrupted{': ' + detail if detail else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TrainingDiverged as exc:
        if debug:
            traceback.print_exc()
        print(f"nasflow: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_DIVERGED
    except (NasflowError, *USER_PATH_ERRORS) as exc:
        if debug:
            traceback.print_exc()
        print(f"nasflow: error: {_one_line(_user_error(exc))}", file=sys.stderr)
        return EXIT_USER
    except OSError as exc:  # a full or read-only disk is the user's to fix, not a bug
        if exc.errno not in USER_ERRNOS:
            return _internal_error(exc, debug)
        if debug:
            traceback.print_exc()
        print(f"nasflow: error: {_one_line(_user_error(exc))}", file=sys.stderr)
        return EXIT_USER
    except Exception as exc:  # noqa: BLE001 - the last line of defence; --debug shows everything
        return _internal_error(exc, debug)


def _internal_error(exc: BaseException, debug: bool) -> int:
    """Anything unexpected is a bug: one line (the traceback with --debug), exit code 1."""
    message = _one_line(f"{type(exc).__name__}: {exc}")
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
        print(f"nasflow: internal error: {message}", file=sys.stderr)
    else:
        print(f"nasflow: internal error: {message} (run with --debug for the traceback)", file=sys.stderr)
    return EXIT_INTERNAL
