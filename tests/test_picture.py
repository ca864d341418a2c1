"""Pictures of the computation graph (symbp graph, symbp.documents.picture): the nodes
and edges drawn are the IR's, read back from the DOT text and, where Graphviz is
installed, from what dot itself parsed (-Tjson, -Tplain); the backward view marks
exactly the values whose adjoint sums two contributions or more; the Mermaid flowchart
of the documents holds the same graph; -o writes through write_set, and a picture format
symbp does not write is one line, exit status 2."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from layer_strategies import stacks
from strategies import models
from tensor_strategies import tensor_models

from symbp.cli import main
from symbp.derive import derive
from symbp.documents import render_document
from symbp.documents.picture import (
    Picture,
    Vertex,
    picture,
    render,
    shape_text,
)
from symbp.escape import terminal_line
from symbp.spec import builtin_names, load, parse_spec

MODELS = ["quadratic", "xor_mlp", "digits_cnn", "residual_digits", "tied_autoencoder"]
DOT = shutil.which("dot")
PDFLATEX = shutil.which("pdflatex")
needs_dot = pytest.mark.skipif(DOT is None, reason="Graphviz's dot not installed")
needs_pdflatex = pytest.mark.skipif(PDFLATEX is None, reason="pdflatex not installed")

_QUOTED = r'"((?:[^"\\]|\\.)*)"'
NODE_LINE = re.compile(rf"^  {_QUOTED} \[label={_QUOTED}, (.*)\];$")
EDGE_LINE = re.compile(rf"^  {_QUOTED} -> {_QUOTED};$")


@pytest.fixture(scope="module")
def derivations():
    return {name: derive(load(name)) for name in builtin_names()}


def unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_dot(text: str) -> tuple[dict[str, tuple[str, str]], Counter]:
    """Node id -> (label, attributes) and the edges, from symbp's DOT text."""
    nodes, edges = {}, Counter()
    for line in text.splitlines():
        if match := NODE_LINE.match(line):
            nodes[unquote(match.group(1))] = (match.group(2), match.group(3))
        elif match := EDGE_LINE.match(line):
            edges[(unquote(match.group(1)), unquote(match.group(2)))] += 1
    return nodes, edges


def ir_edges(graph) -> Counter:
    return Counter((i, node.output) for node in graph.nodes for i in node.inputs)


def with_adjoint(graph) -> set[str]:
    """The values reverse mode gives an adjoint: the loss reads them and they depend on a
    parameter."""
    producer = graph.producer()
    reached, todo = set(), [graph.loss]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo += producer[name].inputs if name in producer else []
    return graph.depends_on_params() & reached


def read_twice_with_adjoint(graph) -> set[str]:
    """Values with an adjoint read by two operations or more that have one too: an
    operation whose value the loss does not read (least_squares' second output) adds
    nothing to an adjoint."""
    backward = with_adjoint(graph)
    reads = Counter(i for node in graph.nodes if node.output in backward for i in node.inputs)
    return {n for n, k in reads.items() if k >= 2} & backward


def dot_reads(text: str, fmt: str) -> str:
    run = subprocess.run(
        [DOT, f"-T{fmt}"], input=text, capture_output=True, text=True, timeout=120, check=True
    )
    return run.stdout


@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("name", builtin_names())
def test_the_dot_text_draws_the_ir(name, backward, derivations):
    graph = derivations[name].graph
    nodes, edges = parse_dot(picture(derivations[name], backward).dot())
    assert set(nodes) == set(graph.tensors)
    assert edges == ir_edges(graph)
    assert sum(edges.values()) == sum(len(node.inputs) for node in graph.nodes)


@needs_dot
@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("name", MODELS)
def test_graphviz_reads_the_same_nodes_and_edges(name, backward, derivations):
    derivation = derivations[name]
    graph, text = derivation.graph, picture(derivation, backward).dot()
    drawn = json.loads(dot_reads(text, "json"))
    objects = {o["_gvid"]: o for o in drawn["objects"]}
    assert sorted(o["name"] for o in objects.values()) == sorted(graph.tensors)
    read = Counter((objects[e["tail"]]["name"], objects[e["head"]]["name"]) for e in drawn["edges"])
    assert read == ir_edges(graph)
    plain_nodes, plain_edges = set(), Counter()
    for line in dot_reads(text, "plain").splitlines():
        words = shlex.split(line)
        if words[0] == "node":
            plain_nodes.add(words[1])
        elif words[0] == "edge":
            plain_edges[(words[1], words[2])] += 1
    assert plain_nodes == set(graph.tensors)
    assert plain_edges == ir_edges(graph)
    # each box names its value and shape as the program does
    labels = {o["name"]: o["label"].replace("\\n", "\n") for o in objects.values()}
    for tensor_name, symbol in derivation.values.items():
        tensor = graph.tensors[tensor_name]
        lines = labels[tensor_name].split("\n")
        assert lines[0] == symbol.name or lines[0].startswith(f"{symbol.name} = ")
        assert any(line.endswith(shape_text(tensor.shape)) for line in lines[1:3])


@pytest.mark.parametrize("name", builtin_names())
def test_the_backward_view_marks_fan_out_exactly(name, derivations):
    derivation = derivations[name]
    graph = derivation.graph
    nodes, _ = parse_dot(picture(derivation, backward=True).dot())
    marked = {n for n, (_, attrs) in nodes.items() if "penwidth=2.5" in attrs}
    assert marked == read_twice_with_adjoint(graph)
    for n in marked:
        assert re.search(r"\\nsums \d+ contributions", nodes[n][0])
    forward, _ = parse_dot(picture(derivation).dot())
    assert not any("penwidth=2.5" in attrs for _, attrs in forward.values())


def test_a_read_the_loss_does_not_need_adds_no_contribution(derivations):
    """least_squares returns x W^T as its output and computes it again for the loss: W
    is read twice, but only one of the two reads reaches the loss."""
    graph = derivations["least_squares"].graph
    assert Counter(i for node in graph.nodes for i in node.inputs)["W"] == 2
    (w,) = [v for v in picture(derivations["least_squares"], True).vertices if v.id == "W"]
    assert w.contributions == 1 and not w.fan_out


def test_a_skip_connection_and_a_tied_weight_are_marked(derivations):
    residual = {v.id for v in picture(derivations["residual_digits"], True).fan_out}
    assert "h1" in residual  # read by W2 h1 and by h2 = h1 + relu(...)
    tied = {v.id for v in picture(derivations["tied_autoencoder"], True).fan_out}
    assert "W" in tied  # read as W x and as W^T
    assert not picture(derivations["xor_mlp"], True).fan_out  # a plain stack fans out nowhere


@pytest.mark.parametrize("name", builtin_names())
def test_the_backward_view_shows_each_gradient_statement(name, derivations):
    derivation = derivations[name]
    nodes, _ = parse_dot(picture(derivation, backward=True).dot())
    for param, grad in derivation.program.grads.items():
        label = unquote(nodes[param.name][0])
        assert f"adjoint: {grad.name} =" in label
    for n in derivation.graph.tensors:
        label = unquote(nodes[n][0])
        has_adjoint = n in with_adjoint(derivation.graph)
        assert ("no adjoint" in label) == (not has_adjoint), (n, label)


def test_quadratic_reads_as_its_formulas(derivations):
    vertices = {v.id: v for v in picture(derivations["quadratic"]).vertices}
    assert vertices["yhat"].title == "yhat = b + t1*w1 + w2*x"
    assert vertices["w1"].lines(False) == ["w1", "parameter (scalar)"]
    assert vertices["x"].lines(False) == ["x", "input (N)"]
    unnamed = [v for v in vertices.values() if v.op and not v.name]
    assert {v.formula for v in unnamed} == {"t1*w1", "w2*x", "-y"}


def mermaid_graph(text: str) -> tuple[list[str], Counter, set[str]]:
    ids, edges, fans = [], Counter(), set()
    for line in text.splitlines()[1:]:
        line = line.strip()
        if match := re.fullmatch(r"(n\d+) --> (n\d+)", line):
            edges[match.groups()] += 1
        elif line.startswith("class "):
            fans = set(line.split()[1].split(","))
        elif not line.startswith("classDef"):
            ids.append(re.match(r"n\d+", line).group(0))
    return ids, edges, fans


@pytest.mark.parametrize("name", builtin_names())
def test_the_markdown_document_holds_the_mermaid_flowchart(name, derivations):
    derivation = derivations[name]
    shown = picture(derivation)
    flowchart = shown.mermaid()
    document = render_document(derivation, "markdown")
    assert f"```mermaid\n{flowchart}```\n" in document
    ids, edges, fans = mermaid_graph(flowchart)
    tensor_of = {f"n{k}": v.id for k, v in enumerate(shown.vertices, start=1)}
    assert sorted(tensor_of[i] for i in ids) == sorted(derivation.graph.tensors)
    assert Counter({(tensor_of[a], tensor_of[b]): k for (a, b), k in edges.items()}) == ir_edges(
        derivation.graph
    )
    assert {tensor_of[f] for f in fans} == read_twice_with_adjoint(derivation.graph)


@pytest.mark.parametrize("fmt", ["text", "latex"])
def test_the_other_documents_list_the_graph(fmt, derivations):
    for name in MODELS:
        document = render_document(derivations[name], fmt)
        assert "omputation graph" in document
        for v in picture(derivations[name]).vertices:
            if v.op and v.name:
                assert v.name.replace("_", r"\_" if fmt == "latex" else "_") in document


def test_labels_are_escaped_for_each_reader():
    hostile = 'a"b\\N \\l `c` <i>&amp; #35; x\ny'
    vertex = Vertex("q", hostile, "param", (2,), "", "", True, 1)
    shown = Picture(hostile, (vertex,), (), backward=False)
    dot_text = shown.dot()
    assert len(dot_text.splitlines()) == 6  # the line break inside stayed a visible escape
    flowchart = shown.mermaid()
    label = re.search(r'\[\["(.*)"\]\]', flowchart).group(1)
    assert not set('"`<>') & set(label.replace("<br/>", ""))
    assert "\n" not in label
    if DOT:
        drawn = json.loads(dot_reads(dot_text, "json"))
        (node,) = drawn["objects"]
        first = node["label"].split("\\n")[0]
        # dot reads back the text (a line break is a space in a label, as textwrap makes it)
        assert unquote(first) == terminal_line(hostile.replace("\n", " "))


def run_cli(args, capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_graph_prints_dot_without_output(capsys, derivations):
    code, out, err = run_cli(["graph", "quadratic"], capsys)
    assert code == 0
    assert out == picture(derivations["quadratic"]).dot()
    code, out, _ = run_cli(["graph", "residual_digits", "--backward"], capsys)
    assert out == picture(derivations["residual_digits"], backward=True).dot()


def test_graph_writes_dot_text(tmp_path, capsys, derivations):
    target = tmp_path / "g.dot"
    code, out, _ = run_cli(["graph", "tied_autoencoder", "--backward", "-o", str(target)], capsys)
    assert code == 0 and out == f"wrote {target}\n"
    assert target.read_text() == picture(derivations["tied_autoencoder"], True).dot()


@needs_dot
def test_graph_writes_svg_and_png(tmp_path, capsys):
    svg, png = tmp_path / "g.svg", tmp_path / "g.png"
    assert run_cli(["graph", "digits_cnn", "-o", str(svg)], capsys)[0] == 0
    assert run_cli(["graph", "digits_cnn", "--backward", "-o", str(png)], capsys)[0] == 0
    text = svg.read_text()
    assert "<svg" in text and "conv2d(U1, W1, b1)" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("suffix", [".pdf", "", ".svgz", ".txt"])
def test_an_unknown_picture_format_is_one_line_and_exit_2(suffix, tmp_path, capsys):
    target = tmp_path / f"g{suffix}"
    code, out, err = run_cli(["graph", "quadratic", "-o", str(target)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"{target}: -o: ")
    assert ".svg" in err and ".png" in err and ".dot" in err
    assert list(tmp_path.iterdir()) == []


def test_without_graphviz_the_dot_text_is_written_instead(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    code, out, err = run_cli(["graph", "quadratic", "-o", str(tmp_path / "g.svg")], capsys)
    assert code == 0
    assert err.count("\n") == 1 and "dot (Graphviz) not found" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.dot"]
    assert (tmp_path / "g.dot").read_text().startswith('digraph "quadratic" {')


def test_the_spec_being_read_is_never_overwritten(tmp_path, capsys):
    """-o goes through write_set: a spec file named like a picture is refused as output."""
    spec = tmp_path / "m.dot"
    spec.write_text(
        'name = "q"\n[model]\ninputs = ["x"]\ntargets = ["y"]\noutput = "w*x"\nloss = "mse"\n'
    )
    before = spec.read_text()
    code, out, err = run_cli(["graph", str(spec), "-o", str(spec)], capsys)
    assert code == 2 and out == ""
    assert err == f"{spec}: is the spec being read: not overwriting it\n"
    assert spec.read_text() == before


def compile_in(folder, name) -> str:
    run = subprocess.run(
        [PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", f"{name}.tex"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = (folder / f"{name}.log").read_text(encoding="latin-1")
    assert run.returncode == 0, log[-3000:]
    return log


@needs_dot
@needs_pdflatex
def test_derive_latex_writes_and_includes_the_picture(tmp_path, capsys, derivations):
    code, _, err = run_cli(
        ["derive", "residual_digits", "--format", "latex", "-o", str(tmp_path / "r.tex")], capsys
    )
    assert code == 0 and err == ""
    assert (tmp_path / "r-graph.pdf").read_bytes()[:5] == b"%PDF-"
    source = (tmp_path / "r.tex").read_text()
    assert source == render_document(derivations["residual_digits"], "latex")  # unchanged
    log = compile_in(tmp_path, "r")
    assert "r-graph.pdf, id=" in log  # included, not the listing


@needs_pdflatex
def test_derive_latex_without_graphviz_lists_the_graph(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    code, _, err = run_cli(
        ["derive", "xor_mlp", "--format", "latex", "-o", str(tmp_path / "x.tex")], capsys
    )
    assert code == 0
    assert err.count("\n") == 1 and "dot (Graphviz) not found" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tex"]
    log = compile_in(tmp_path, "x")
    assert "graph.pdf" not in log


@needs_dot
def test_render_refuses_unknown_formats_and_draws_known_ones(derivations):
    text = picture(derivations["quadratic"]).dot()
    assert render(text, "pdf")[:5] == b"%PDF-"
    with pytest.raises(ValueError):
        render(text, "gif")


@pytest.mark.parametrize("name", MODELS)
def test_pictures_are_deterministic(name, derivations):
    first = picture(derivations[name], True).dot()
    assert first == picture(derive(load(name)), True).dot()


def check_random(text: str) -> None:
    """A random model's picture draws its IR and marks its fan-out exactly, in DOT and
    in Mermaid."""
    derivation = derive(parse_spec(text, "random.toml"))
    graph = derivation.graph
    for backward in (False, True):
        shown = picture(derivation, backward)
        nodes, edges = parse_dot(shown.dot())
        assert set(nodes) == set(graph.tensors) and edges == ir_edges(graph)
        assert len(shown.listing()) == len(graph.nodes)
    assert {v.id for v in shown.fan_out} == read_twice_with_adjoint(graph)
    ids, mermaid_edges, _ = mermaid_graph(shown.mermaid())
    assert len(ids) == len(graph.tensors)
    assert sum(mermaid_edges.values()) == sum(edges.values())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=models())
def test_random_expression_models_are_drawn(model):
    check_random(model.toml)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stack=stacks())
def test_random_layer_stacks_are_drawn(stack):
    check_random(stack.toml())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=tensor_models())
def test_random_tensor_models_are_drawn(case):
    check_random(case.toml())


# an unnamed concatenation the program drops (the loss does not read the let-name
# unused), listed by its formula: [x; u]
CONCAT = """name = "concat_model"
[model]
inputs = { x = [3], u = [3] }
output = "h"
loss = "mse(h, h * 0.5)"
[model.params]
P = [3]
[model.let]
unused = "tanh(concat(x, u))"
h = "P * tanh(x)"
"""


@needs_pdflatex
def test_a_listing_line_opening_with_a_bracket_compiles(tmp_path):
    """A concatenation is written [a; b]: after LaTeX's \\\\ a [ would start its optional
    argument (a length), and pdflatex stops."""
    derivation = derive(parse_spec(CONCAT, "concat.toml"))
    assert any(line.startswith("[") for line in picture(derivation).listing())
    (tmp_path / "c.tex").write_text(render_document(derivation, "latex"), encoding="utf-8")
    log = compile_in(tmp_path, "c")
    assert "Missing number" not in log
