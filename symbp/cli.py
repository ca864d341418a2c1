"""The ``symbp`` command line: derive, generate, check, verify, run, graph, examples.

Bad input of any kind ends in one line on stderr and exit status 2, with nothing
written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import SpecError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symbp",
        description="Symbolic backpropagation: derive gradients, generate verified training code.",
    )
    from . import __version__
    from .targets import TARGETS

    parser.add_argument("--version", action="version", version=f"symbp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    spec_help = "a spec file (.toml) or the name of a built-in example"

    derive = sub.add_parser("derive", help="write the derivation of a model's gradients")
    derive.add_argument("spec", help=spec_help)
    derive.add_argument("--format", choices=("text", "latex", "markdown"), default="text")
    derive.add_argument("-o", "--output", help="file to write (default: stdout)")
    derive.add_argument("--stats", action="store_true", help="report operation counts instead")
    derive.add_argument(
        "--element",
        action="store_true",
        help="layer stacks: add the index form (dL/dw_ij = sum_n delta_ni a_nj)",
    )

    generate = sub.add_parser("generate", help="emit a standalone training module")
    generate.add_argument("spec", help=spec_help)
    generate.add_argument("--target", choices=tuple(TARGETS), default="numpy")
    generate.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        help="default: float64 for expression models, float32 for layer stacks",
    )
    generate.add_argument("-o", "--output", help="module path (default: NAME.py here)")
    generate.add_argument("--tests", action="store_true", help="also write test_NAME.py beside it")

    check = sub.add_parser("check", help="compare generated gradients with finite differences")
    check.add_argument("spec", help=spec_help)
    check.add_argument("--points", type=int, default=5, help="random points (default 5)")
    check.add_argument("--seed", type=int, default=0)

    run = sub.add_parser("run", help="derive, generate and train a model, showing each step")
    run.add_argument("spec", help=spec_help)
    run.add_argument(
        "-o", "--output-dir", default="symbp-out", help="where to write (default symbp-out)"
    )

    verify = sub.add_parser(
        "verify", help="prove or refute claimed formulas for gradients and adjoints"
    )
    verify.add_argument("spec", help=spec_help)
    verify.add_argument("claims", help='a TOML file of claims: "dl/dw1" = "formula" lines')
    verify.add_argument("--seed", type=int, default=0, help="seed of the numeric points")

    graph = sub.add_parser("graph", help="draw the model's computation graph")
    graph.add_argument("spec", help=spec_help)
    graph.add_argument(
        "-o", "--output", help="picture to write: .svg, .png or .dot (default: DOT on stdout)"
    )
    graph.add_argument(
        "--backward",
        action="store_true",
        help="add each value's adjoint and mark where fan-out sums contributions",
    )

    sub.add_parser("examples", help="list the built-in examples")

    regen = sub.add_parser("regenerate", help="rewrite (or --check) the built-ins' outputs")
    regen.add_argument("folder", nargs="?", default="generated")
    regen.add_argument("--check", action="store_true", help="only report stale files; exit 1")
    return parser


def _load(arg: str):
    from .derive import derive
    from .language.model import TensorModel
    from .spec import load
    from .spec.expression import ExpressionSpec
    from .stats import layer_size_warning, size_warning

    spec = load(arg)
    # layer stacks and tensor models derive on whole tensors: their cost grows with the
    # depth, not the widths
    if isinstance(spec, ExpressionSpec):
        warning = size_warning(spec)
    elif isinstance(spec, TensorModel):
        warning = None
    else:
        warning = layer_size_warning(spec)
    if warning:
        print(f"symbp: {warning}", file=sys.stderr)
    return derive(spec)


def _warn(spec: str, line: str) -> None:
    from .escape import terminal_line

    print(terminal_line(f"symbp: {spec}: {line}"), file=sys.stderr, flush=True)


def _cmd_derive(args) -> int:
    from .language.model import TensorModel
    from .spec.layers import LayerSpec

    if args.stats:
        from .spec import load

        spec = load(args.spec)
        if isinstance(spec, TensorModel):  # flops of the program against the forward pass
            from .derive import derive
            from .program.flops import format_flops

            text = format_flops(derive(spec).program, spec.name, spec.train.batch_size)
        elif isinstance(spec, LayerSpec):  # per-layer parameters, flops and cached memory
            from .documents.layers import format_layer_costs, layer_costs

            text = format_layer_costs(layer_costs(spec), spec.name)
        else:  # operation counts of the straight-line program against naive differentiation
            from .stats import format_stats, op_stats

            text = format_stats(op_stats(spec), spec.name)
    else:
        from .documents import render_document

        derivation = _load(args.spec)
        if isinstance(derivation.spec, LayerSpec):
            from .documents.layers import render_layer_document

            text = render_layer_document(derivation, args.format, element=args.element)
        else:
            if args.element:
                print("symbp: --element applies to layer stacks only; ignored", file=sys.stderr)
            text = render_document(derivation, args.format)
        if args.format == "latex" and args.output:
            return _emit_latex(derivation, text, Path(args.output), args.spec)
    return _emit(text, args.output, args.spec)


def _emit_latex(derivation, text: str, output: Path, spec: str) -> int:
    """The LaTeX document and, where Graphviz's dot is installed, its picture of the
    graph beside it (NAME-graph.pdf, which the document includes when it is there)."""
    from .documents import picture
    from .output import write_set

    files: dict[Path, str | bytes] = {output: text}
    if picture.dot_program() is None:
        _warn(spec, f"dot (Graphviz) not found: {output} lists the graph's values instead")
    else:
        dot_text = picture.picture(derivation).dot()
        try:
            files[output.with_name(f"{output.stem}-graph.pdf")] = picture.render(dot_text, "pdf")
        except picture.RenderError as err:
            _warn(spec, f"{err}: {output} lists the graph's values instead")
    write_set(files, inputs=[spec])
    return 0


def _emit(text: str, output: str | None, spec: str) -> int:
    if output:
        from .output import write_set

        write_set({Path(output): text}, inputs=[spec])
    else:
        from .escape import text as terminal_text

        sys.stdout.write(terminal_text(text))
        if not text.endswith("\n"):
            sys.stdout.write("\n")
    return 0


def _cmd_generate(args) -> int:
    from .output import write_set
    from .targets import TARGETS, GenerateOptions

    target = TARGETS[args.target]
    options = GenerateOptions(args.output, args.dtype, args.tests)
    target.check_options(options)
    files = target.files(_load(args.spec), options)
    for written in write_set(files, inputs=[args.spec]):
        print(f"wrote {written}")
    return 0


def _cmd_check(args) -> int:
    from .check import TOLERANCE, check

    if args.points < 1:
        raise SpecError(args.spec, "--points", "must be at least 1")
    if not 0 <= args.seed < 2**32:
        raise SpecError(args.spec, "--seed", "must be an integer in [0, 2**32)")
    result = check(
        _load(args.spec), args.points, args.seed, warn=lambda line: _warn(args.spec, line)
    )
    print(f"{'parameter':<16} worst relative error over {result.points} point(s)")
    for name, err in result.worst.items():
        flag = "ok" if err <= TOLERANCE else "MISMATCH"
        print(f"{name:<16} {err:.2e}  {flag}")
    if result.points == 0:
        print("no random point gave a finite loss: nothing was checked")
    print("gradients match finite differences" if result.ok else "gradient check FAILED")
    return 0 if result.ok else 1


def _cmd_run(args) -> int:
    from .check import guard_memory, load_module
    from .documents import render_document
    from .escape import text as terminal_text
    from .output import write_set
    from .targets.numpy.module import render_module, render_tests

    derivation = _load(args.spec)
    guard_memory(derivation.spec, "training")
    name = derivation.spec.name
    folder = Path(args.output_dir)
    module_path = folder / f"{name}.py"
    write_set(
        {
            module_path: render_module(derivation),
            folder / f"test_{name}.py": render_tests(derivation, name),
            folder / f"{name}.md": render_document(derivation, "markdown"),
        },
        inputs=[args.spec],
        make_folder=folder,
    )
    print(terminal_text(render_document(derivation, "text")))
    print(f"generated {module_path}, its tests and {folder / (name + '.md')}")
    module = load_module(module_path, name)
    dataset = getattr(derivation.spec, "dataset", None)
    if dataset:
        return _train_on_dataset(module, derivation.spec, dataset)
    print(f"training: python {module_path}\n")
    sys.stdout.flush()
    return module.main([])


def _train_on_dataset(module, spec, dataset: str) -> int:
    """Train on a packaged dataset with a held-out quarter and report its accuracy."""
    from .datasets import DATASETS, baseline, load_dataset

    X, y, X_test, y_test = load_dataset(dataset, spec.source, seed=spec.seed)
    print(f"training on {DATASETS[dataset]}: {len(X)} samples, {len(X_test)} held out\n")
    # a model with batch statistics keeps their running averages, and is evaluated with
    # them (eval mode), as torch's model.eval()
    state = {"buffers": module.init_buffers()} if hasattr(module, "init_buffers") else {}
    params, losses = module.train(module.init_params(spec.seed), X, y, **state)
    every = max(1, len(losses) // 10)
    for epoch in range(every, len(losses) + 1, every):
        print(f"epoch {epoch:>4}  loss {losses[epoch - 1]:.6g}")
    mode = " (eval mode: running statistics)" if state else ""
    if hasattr(module, "accuracy"):
        print(f"training accuracy{mode}: {module.accuracy(params, X, y, **state):.2%}")
        print(f"held-out accuracy{mode}: {module.accuracy(params, X_test, y_test, **state):.2%}")
        return 0
    print(f"held-out loss{mode}: {module.loss(params, X_test, y_test, **state):.6g}")
    reference = baseline(dataset, X_test, y_test)
    if reference is not None:
        print(f"held-out loss of {reference[0]}: {reference[1]:.6g}")
    return 0


def _cmd_verify(args) -> int:
    """Exit 0 when no claim is refuted (each proved, or equal at every seeded point
    where not proved), 1 when one is."""
    from .spec import load
    from .verify import read_claims, verify_claims

    if args.seed < 0:
        raise SpecError(args.spec, "--seed", f"a seed is a non-negative integer, got {args.seed}")
    claims = read_claims(args.claims)  # before the spec: a bad claims file costs nothing
    result = verify_claims(load(args.spec), claims, seed=args.seed, source=args.claims)
    print(result.text())
    return result.exit_code


PICTURE_SUFFIXES = (".svg", ".png", ".dot")


def _cmd_graph(args) -> int:
    from .documents import picture
    from .errors import way_out
    from .output import write_set

    output = Path(args.output) if args.output else None
    if output is not None and output.suffix.lower() not in PICTURE_SUFFIXES:
        known = ", ".join(PICTURE_SUFFIXES)
        problem = (
            f"unknown picture format {output.suffix!r}{way_out(output.suffix, PICTURE_SUFFIXES)}"
            if output.suffix
            else f"needs a picture format as its suffix (known: {known})"
        )
        raise SpecError(args.output, "-o", problem)
    dot_text = picture.picture(_load(args.spec), backward=args.backward).dot()
    if output is None:
        return _emit(dot_text, None, args.spec)
    fmt = output.suffix.lower()[1:]
    content: str | bytes = dot_text
    if fmt != "dot":
        if picture.dot_program() is None:
            output = output.with_suffix(".dot")
            _warn(args.spec, f"dot (Graphviz) not found: writing the DOT text to {output}")
        else:
            try:
                content = picture.render(dot_text, fmt)
            except picture.RenderError as err:
                raise SpecError(args.output, "-o", str(err)) from None
    for written in write_set({output: content}, inputs=[args.spec]):
        print(f"wrote {written}")
    return 0


def _cmd_examples(args) -> int:
    from .spec import builtin_names, load

    for name in builtin_names():
        print(f"{name:<20} {load(name).description}")
    return 0


def _cmd_regenerate(args) -> int:
    from .builtins import generated_files, stale_files
    from .output import write_set

    folder = Path(args.folder)
    if folder.exists() and not folder.is_dir():
        raise SpecError(str(folder), "", "is not a folder")
    if args.check:
        stale = stale_files(folder)
        for name in stale:
            print(f"{folder / name} is stale: run 'symbp regenerate {folder}'")
        return 1 if stale else 0
    files = {folder / name: text for name, text in generated_files().items()}
    write_set(files, make_folder=folder)
    print(f"wrote {len(files)} files to {folder}")
    return 0


COMMANDS = {
    "derive": _cmd_derive,
    "generate": _cmd_generate,
    "check": _cmd_check,
    "run": _cmd_run,
    "verify": _cmd_verify,
    "graph": _cmd_graph,
    "examples": _cmd_examples,
    "regenerate": _cmd_regenerate,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # SymPy walks expressions recursively: deep models need more than the default 1000
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
    try:
        return COMMANDS[args.command](args)
    except SpecError as err:
        print(str(err), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
