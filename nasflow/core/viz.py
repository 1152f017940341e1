"""Genotype pictures: a graphviz ``Digraph`` per genotype, one cluster per cell label.

The ``.dot`` text is always written, because it needs nothing but Python; SVG/PNG are rendered
only when the Graphviz ``dot`` binary exists. Without it users of other NAS tools meet
``ExecutableNotFound`` and lose the picture; here they get the ``.dot`` file and a one-line
install hint instead.

When the genotype's space is registered, its cell graph adds what the edges alone do not say:
input nodes, display names (``c_{k-2}``), residual additions (dashed ``+``) and the output node.
An unknown space still gives a picture of the edges.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import graphviz

from nasflow.atomic import write_bytes_atomic, write_text_atomic
from nasflow.errors import NasflowError
from nasflow.core.genotype import GenoEdge, Genotype

if TYPE_CHECKING:
    from nasflow.core.graph import CellGraph
    from nasflow.core.space import CellSpace

INSTALL_HINT = (
    "install Graphviz to render pictures: apt-get install graphviz / brew install graphviz / "
    "conda install graphviz; the .dot file was written"
)
KNOWN_SUFFIXES = {".dot", ".gv", ".svg", ".png", ".pdf", ".jpg", ".jpeg"}

_INPUT = {"shape": "box", "style": "rounded,filled", "fillcolor": "darkseagreen2"}
_INNER = {"shape": "box", "style": "filled", "fillcolor": "lightblue"}
_OUTPUT = {"shape": "box", "style": "rounded,filled", "fillcolor": "palegoldenrod"}
_JUNCTION = {"shape": "box", "style": "rounded,dashed", "fontsize": "10"}


@dataclass
class VizResult:
    """What :func:`write_genotype_picture` wrote; ``hint`` says why something was not rendered."""

    dot_path: Path
    rendered: list[Path] = field(default_factory=list)
    hint: str | None = None


# -- building the graph ---------------------------------------------------------------------------
def _node_id(label: str, node: str) -> str:
    """Unique across clusters; ``:`` is encoded because graphviz reads it as a port separator."""
    return f"{label}.{node}".replace("%", "%25").replace(":", "%3A")


def _text(value: str) -> str:
    """User strings (op and node names) shown literally: no backslash escapes, no HTML."""
    return graphviz.escape(value)


def _resolve_space(genotype: Genotype, space: "CellSpace | str | None") -> tuple["CellSpace | None", str | None]:
    """(space, None), or (None, why) when the space cannot be built: the picture then shows edges only."""
    if space is not None and not isinstance(space, str):
        return space, None
    from nasflow.registries import SPACES

    name = space or genotype.space
    try:
        return SPACES.get(name)(), None
    except (NasflowError, TypeError) as exc:
        return None, f"space '{name}' not available ({exc.__class__.__name__}); edges only"


def _cell_options(label: str) -> dict[str, Any]:
    """Genotypes do not store cell options; DARTS names its reduction cell 'reduce'."""
    return {"reduction": True} if label.lower().startswith("reduc") else {}


def _cell_graph(space: "CellSpace", label: str) -> tuple["CellGraph", dict[str, Any]]:
    options = _cell_options(label)
    try:
        return space.graph(**options), options
    except TypeError:  # the space takes no such option
        return space.graph(), {}


def _fusion_caption(space: "CellSpace", graph: "CellGraph", options: dict[str, Any]) -> str | None:
    """'concat + 1x1 fusion' when the space fuses its output nodes with a module, else None."""
    try:
        post = space.io_modules(8, **options).post
    except Exception:  # noqa: BLE001 - a plugin that cannot build toy modules must not cost the picture
        return None
    if post is None:
        return None
    kernel = getattr(post, "kernel_size", None)
    what = f"{kernel[0]}x{kernel[1]} fusion" if isinstance(kernel, tuple) and len(kernel) == 2 else type(post).__name__
    return f"concat + {what}" if len(graph.output) > 1 else what


def _add_cell(
    sub: graphviz.Digraph, label: str, edges: Sequence[GenoEdge], space: "CellSpace | None"
) -> None:
    """Nodes, chosen edges, residual additions and output of one cell, into ``sub``."""
    graph, options = _cell_graph(space, label) if space is not None else (None, {})
    drawn: set[str] = set()

    def node(name: str, style: dict[str, str], text: str | None = None) -> None:
        if name not in drawn:
            drawn.add(name)
            sub.node(_node_id(label, name), _text(text if text is not None else name), **style)

    if graph is not None:
        for name in graph.inputs:
            node(name, _INPUT, graph.label(name))
        for spec in graph.nodes:
            node(spec.name, _INNER, graph.label(spec.name))
    else:  # no cell graph: nodes that are never a destination are the inputs
        dsts = {e.dst for e in edges}
        for e in edges:
            node(e.src, _INNER if e.src in dsts else _INPUT)
            node(e.dst, _INNER)

    for e in edges:
        node(e.src, _INNER)  # a node the space does not know is still drawn
        node(e.dst, _INNER)
        sub.edge(_node_id(label, e.src), _node_id(label, e.dst), label=_text(e.op))
    if graph is None:
        return

    for spec in graph.nodes:
        if spec.residual is not None:
            src, dst = _node_id(label, spec.residual), _node_id(label, spec.name)
            sub.edge(src, dst, label="+", style="dashed", color="gray40")

    out = _node_id(label, "__output__")
    sub.node(out, _text(graph.output_label), **_OUTPUT)
    caption = _fusion_caption(space, graph, options) if space is not None else None
    target = out
    if caption is not None:
        target = _node_id(label, "__fusion__")
        sub.node(target, _text(caption), **_JUNCTION)
        sub.edge(target, out)
    for name in graph.output:
        sub.edge(_node_id(label, name), target, color="gray40")


def _cell_title(label: str, space: "CellSpace | None") -> str:
    if space is None:
        return label
    graph, _ = _cell_graph(space, label)
    sources = {e.src for e in graph.edges if e.stride > 1}
    if not sources:
        return label
    stride = max(e.stride for e in graph.edges)
    strided = [graph.label(n) for n in graph.node_names if n in sources]
    return f"{label} (stride {stride} on edges from {', '.join(strided)})"


def genotype_digraph(genotype: Genotype, space: "CellSpace | str | None" = None) -> graphviz.Digraph:
    """The genotype as a left-to-right graph: one cluster per label, edges labelled by op.

    ``space`` defaults to the genotype's own space from the registry; when it cannot be
    built, the picture shows the genotype's edges only (and says so in its title).
    """
    resolved, why = _resolve_space(genotype, space)
    title = f"{genotype.space} genotype" + (f" - {why}" if why else "")
    dot = graphviz.Digraph(name=f"genotype_{genotype.space}")
    dot.attr(rankdir="LR", label=_text(title), labelloc="t", fontname="Helvetica")
    dot.attr("node", fontname="Helvetica")
    dot.attr("edge", fontname="Helvetica", fontsize="10")
    # With rankdir=LR dot stacks clusters bottom-up; emitting them in reverse puts the first on top.
    for index, (label, edges) in reversed(list(enumerate(genotype.cells))):
        with dot.subgraph(name=f"cluster_{index}") as sub:
            sub.attr(label=_text(_cell_title(label, resolved)), style="rounded", color="gray60")
            _add_cell(sub, label, edges, resolved)
    return dot


# -- writing files --------------------------------------------------------------------------------
def picture_base(out: str | Path) -> Path:
    """``out`` without a known picture suffix: 'g.svg', 'g.dot' and 'g' all mean 'g'."""
    out = Path(out)
    return out.with_suffix("") if out.suffix.lower() in KNOWN_SUFFIXES else out


def _sibling(base: Path, fmt: str) -> Path:
    return base.parent / f"{base.name}.{fmt}"  # not with_suffix: 'g.v1' must keep its '.v1'


def _check_formats(formats: Iterable[str]) -> list[str]:
    wanted = []
    for fmt in formats:
        fmt = fmt.lower().lstrip(".")
        if fmt not in graphviz.FORMATS:
            raise NasflowError(f"unknown picture format '{fmt}'; try svg, png or pdf")
        if fmt not in ("dot", "gv") and fmt not in wanted:  # the .dot file is always written
            wanted.append(fmt)
    return wanted


def write_genotype_picture(
    genotype: Genotype,
    out: str | Path,
    formats: Sequence[str] = ("svg", "png"),
    *,
    keep: Iterable[str | Path] = (),
) -> VizResult:
    """Write ``<out>.dot`` and, when ``dot`` is installed, ``<out>.<fmt>`` for each format.

    Overwrites earlier pictures at the same place; refuses (NasflowError) to overwrite a path
    in ``keep`` (the CLI passes the genotype file, so 'g.dot' holding JSON is never clobbered).
    """
    wanted = _check_formats(formats)
    base = picture_base(out)
    result = VizResult(dot_path=_sibling(base, "dot"))
    kept = {Path(p).resolve() for p in keep}
    for path in [result.dot_path] + [_sibling(base, fmt) for fmt in wanted]:
        if path.resolve() in kept:
            raise NasflowError(f"refusing to overwrite {path} with a picture; choose another output with -o")

    digraph = genotype_digraph(genotype)
    base.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(result.dot_path, digraph.source)
    if not wanted:
        return result
    if shutil.which("dot") is None:
        result.hint = INSTALL_HINT
        return result
    problems = []
    for fmt in wanted:
        try:
            data = digraph.pipe(format=fmt)
        except graphviz.ExecutableNotFound:
            result.hint = INSTALL_HINT
            return result
        except subprocess.CalledProcessError as exc:  # e.g. a Graphviz build without PNG support
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else str(exc.stderr or "")
            first = stderr.strip().splitlines()[0] if stderr.strip() else f"exit code {exc.returncode}"
            problems.append(f"dot could not render {fmt}: {first}")
            continue
        path = _sibling(base, fmt)
        write_bytes_atomic(path, data)
        result.rendered.append(path)
    if problems:
        result.hint = "; ".join(problems) + "; the .dot file was written"
    return result
