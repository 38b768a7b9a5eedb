"""``python -m ref``: papers, lessons, figures, golden vectors and benchmarks.

    python -m ref papers [--markdown | --update-readme]
    python -m ref lessons list
    python -m ref lessons run SLUG [--quick] [--out DIR]
    python -m ref figures [--quick] [--out DIR] [--only SLUG ...]
    python -m ref golden list
    python -m ref golden run OP --inputs IN.npz --out OUT.npz
    python -m ref golden export OP|all --out DIR [--dtype float64] [--seed 0]
    python -m ref golden check BUNDLE (--impl module:function | --outputs OUTDIR) [--dtype D] [--quiet]
    python -m ref bench [NAME|all|gpu] [--smoke] [--out DIR]

Bad input (an unknown op or lesson, a missing or malformed array, a damaged golden bundle) prints
``error: ...`` naming the argument and exits with code 2; a failing lesson, benchmark or golden
check exits with code 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: usage + exit code 2
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _papers(args) -> int:
    from ref import catalog

    if args.update_readme:
        readme = catalog.ROOT / "README.md"
        from ref.io import write_text

        write_text(readme, catalog.readme_with_table(readme.read_text(encoding="utf-8")))
        print(f"updated the paper table in {readme}")
    elif args.markdown:
        print(catalog.markdown_table())
    else:
        print(catalog.text_table())
    return 0


def _lessons(args) -> int:
    from ref import lessons

    if args.action == "list":
        for lesson in lessons.discover():
            print(f"{lesson.name:28s} {lesson.title}")
        return 0
    lesson = lessons.find(args.slug)
    rc, seconds, _ = lessons.run(lesson, quick=args.quick, out_dir=args.out)
    print(f"[lessons] {lesson.name}: {'ok' if rc == 0 else f'FAILED (exit code {rc})'} in {seconds:.1f} s")
    return 0 if rc == 0 else 1


def _figures(args) -> int:
    from ref import figures

    return 1 if figures.rebuild(quick=args.quick, out_dir=args.out, only=args.only) else 0


def _golden(args) -> int:
    from ref import golden
    from ref.io import load_npz, save_npz

    if args.action == "list":
        for op in golden.OPS.values():
            ins = ", ".join(f"{t.name}{'?' if t.optional else ''} {t.shape}" for t in op.inputs)
            outs = ", ".join(f"{t.name} {t.shape}" + (f" [when {t.when}]" if t.when else "") for t in op.outputs)
            grads = ", ".join("d" + n for n in op.grad_inputs)
            print(f"{op.name}\n  reference: {op.reference}\n  mirrors: {op.mirrors}\n  layout:  {op.layout}")
            if op.state_layout:
                print(f"  state:   {op.state_layout}")
            print(f"  inputs:  {ins}")
            if op.options:
                print("  options: " + ", ".join(f"{o.name}={o.default!r}" for o in op.options))
            print(f"  outputs: {outs}\n  grads:   {grads} (given cotangents d<output>)")
        return 0
    if args.action == "export":
        from ref.golden import bundle

        names = list(golden.OPS) if args.op == "all" else [golden.get(args.op).name]
        for name in names:
            path = bundle.export(name, args.out, dtype=args.dtype, seed=args.seed)
            print(f"wrote {path} ({len(list(path.glob('*.npz')))} cases, {args.dtype})")
        return 0
    if args.action == "check":
        from ref.golden import check

        impl = check.load_impl(args.impl) if args.impl else None
        results = check.check_bundle(args.bundle, impl=impl, outputs=args.outputs, dtype=args.dtype)
        print(check.format_report(results, verbose=not args.quiet))
        return 0 if all(r.ok for r in results) else 1
    golden.get(args.op)  # an unknown op fails before any file is read
    arrays = load_npz(args.inputs, what="--inputs")
    result = golden.run(args.op, arrays)
    save_npz(args.out, result)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in result.items()))
    return 0


def _bench(args) -> int:
    from ref.bench import BENCHMARKS, NAMED_ONLY
    from ref.lessons import FIGURES_DIR

    if args.name != "all" and args.name not in BENCHMARKS and args.name not in NAMED_ONLY:
        names = ", ".join([*BENCHMARKS, *NAMED_ONLY])
        raise ValueError(f"bench: expected all or one of {names}, got {args.name!r}")
    out = Path(args.out) if args.out else FIGURES_DIR / ("quick" if args.smoke else "") / "bench"
    if args.name in NAMED_ONLY:  # never part of "all" (a GPU, the cuda extra)
        NAMED_ONLY[args.name](out, smoke=args.smoke)
        return 0
    for name in BENCHMARKS if args.name == "all" else [args.name]:
        print(f"[bench] {name}")
        BENCHMARKS[name](out, smoke=args.smoke)
    print(f"[bench] results in {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m ref", description="A NumPy reference of recent sequence models.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sp = sub.add_parser("papers", help="the catalog of seed papers")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--markdown", action="store_true", help="print the README table")
    g.add_argument("--update-readme", action="store_true", help="rewrite the README's paper table")
    sp.set_defaults(fn=_papers)

    sp = sub.add_parser("lessons", help="list or run lessons")
    lsub = sp.add_subparsers(dest="action", required=True, parser_class=_Parser)
    lsub.add_parser("list")
    lr = lsub.add_parser("run")
    lr.add_argument("slug", help="number, slug or both: 01, linear_scan, 01_linear_scan")
    lr.add_argument("--quick", action="store_true", help="small sizes (what CI runs)")
    lr.add_argument("--out", type=Path, default=None, help="figure folder (default figures/ or figures/quick/)")
    sp.set_defaults(fn=_lessons)

    sp = sub.add_parser("figures", help="rebuild every figure and the gallery")
    sp.add_argument("--quick", action="store_true", help="quick mode, into figures/quick/")
    sp.add_argument("--out", type=Path, default=None)
    sp.add_argument("--only", nargs="+", default=None, metavar="SLUG")
    sp.set_defaults(fn=_figures)

    sp = sub.add_parser("golden", help="golden vectors")
    gsub = sp.add_subparsers(dest="action", required=True, parser_class=_Parser)
    gsub.add_parser("list")
    gr = gsub.add_parser("run")
    gr.add_argument("op")
    gr.add_argument("--inputs", type=Path, required=True)
    gr.add_argument("--out", type=Path, required=True)
    dtypes = ("float64", "float32", "float16", "bfloat16")  # ref.golden.tolerance.DTYPES, not imported here (slow)
    ge = gsub.add_parser("export", help="write golden bundles: cases, outputs, gradients, manifest")
    ge.add_argument("op", help="an op from 'golden list', or all")
    ge.add_argument("--out", type=Path, required=True, help="folder; each op's bundle goes to OUT/<op>/")
    ge.add_argument("--dtype", choices=dtypes, default="float64",
                    help="round inputs and cotangents to this dtype (outputs and gradients stay float64)")
    ge.add_argument("--seed", type=int, default=0)
    gc = gsub.add_parser("check", help="check an implementation against golden bundles")
    gc.add_argument("bundle", type=Path, help="a bundle folder (OUT/<op>) or a folder of them (OUT)")
    how = gc.add_mutually_exclusive_group(required=True)
    how.add_argument("--impl", help="module:function taking (op, arrays) and returning outputs and gradients")
    how.add_argument("--outputs", type=Path, help="folder of result files, one <case>.npz per case file")
    gc.add_argument("--dtype", choices=dtypes, default=None,
                    help="tolerances for this dtype (default: the dtype the bundle was exported in)")
    gc.add_argument("--quiet", action="store_true", help="list failing tensors only")
    sp.set_defaults(fn=_golden)

    sp = sub.add_parser("bench", help="benchmarks")
    sp.add_argument("name", nargs="?", default="all", help="a benchmark, or all of them (the default); gpu (not in all) needs a GPU")
    sp.add_argument("--smoke", action="store_true", help="tiny sizes, to check it runs")
    sp.add_argument("--out", type=Path, default=None)
    sp.set_defaults(fn=_bench)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
