"""`zoo`: list, inspect and export the model zoo.  Errors are one line; exit codes say failure."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from exporters.declared import export_declared, write_manifest
from exporters.export import export
from exporters.importing import add_parser as add_import_parser
from exporters.listing import print_info, print_list
from exporters.tune import tune
from zoo import backends
from zoo.artifact import find, store_name
from zoo.imported import register_stored
from zoo.registry import UnknownModel, get, list_models


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _export(args: argparse.Namespace) -> None:
    if args.manifest:
        for found in export_declared(args.manifest, _progress):
            print(f"{found.artifact.tag} {'exported' if found.created else 'present'} ({found.model}, declared)")
        return
    names = list_models() if args.all else [args.name]
    if not args.all:
        get(args.name)  # fail on an unknown name before any heavy import
    for name in names:
        target = store_name(name, args.format, args.precision)
        if args.if_missing and (stored := find(target)) is not None:
            print(f"{stored.tag} present (latest of {target}: nothing exported, nothing changed)")
            continue
        weights = get(name).pretrained if args.pretrained else args.weights
        result = export(
            name, args.format, weights, args.precision, force=args.force, progress=_progress,
            calibration=args.calibration,
        )
        parity = result.artifact.metadata.get("parity") or {}
        state = "exported" if result.created else "present"
        figures = f" parity max_abs={parity['max_abs']:.3g}" if parity else ""
        if cert := result.artifact.metadata.get("certificate"):
            figures += f" certificate {json.dumps(cert['figures'])} passed={cert['passed']} gated={cert['gated']}"
        print(f"{result.artifact.tag} {state} {result.seconds:.1f}s{figures} (now {target}:latest)")


def _manifest(args: argparse.Namespace) -> None:
    text = write_manifest(args.output)
    if args.output is None:
        print(text, end="")
    else:
        print(f"wrote {args.output}: {text.count('weights:')} models", file=sys.stderr)


def _tune(args: argparse.Namespace) -> None:
    sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    threads = tuple(int(t) for t in args.threads.split(",")) if args.threads else None
    tune(args.name, args.p99_ms, args.write, sizes, threads, args.seconds)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="zoo", description="The zooserve model zoo")
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="registered models").set_defaults(run=print_list)
    info = commands.add_parser("info", help="a model's tasks, config and export spec")
    info.add_argument("name", help="a registered model (zoo list)")
    info.add_argument("--weights", help="as for export: a local path, torchvision:MEMBER or hf:ORG/NAME[@REV]")
    info.set_defaults(run=print_info)
    exp = commands.add_parser("export", help="export into the BentoML model store (skips what is there)")
    exp.add_argument("name", nargs="?", help="the model to export (or --all)")
    exp.add_argument("--all", action="store_true", help="every registered model, default config")
    exp.add_argument(
        "--if-missing",
        action="store_true",
        help="skip a model that has any artifact of this format and precision stored already (what make serve "
        "runs: a user's own export is never replaced by a default one)",
    )
    exp.add_argument(
        "--manifest",
        type=Path,
        metavar="FILE",
        help="export what this serving manifest (ZOOSERVE_CONFIG) declares and the store lacks; moves no latest",
    )
    exp.add_argument("--force", action="store_true", help="export again even if the same content is stored")
    exp.add_argument(
        "--format",
        choices=backends.formats(),
        default="onnx",
        help="the artifact: onnx (ONNX Runtime), tensorrt (an engine built from the onnx one, CUDA), or torch "
        "(a state dict for the torch backend); default onnx",
    )
    exp.add_argument("--weights", help="a local file or folder, torchvision:MEMBER, or hf:ORG/NAME[@REVISION]")
    exp.add_argument("--pretrained", action="store_true", help="each model's official pretrained weights")
    exp.add_argument(
        "--precision",
        choices=backends.precisions(),
        default="fp32",
        help="fp32 (default); int8: a quantized onnx artifact with an accuracy certificate (ONNX Runtime on CPU); "
        "fp16: a TensorRT engine (torch halves fp32 weights at load instead)",
    )
    exp.add_argument("--calibration", help="int8: a folder of your own JPEG/PNG photos to calibrate on")
    exp.set_defaults(run=_export)
    add_import_parser(commands)
    man = commands.add_parser("manifest", help="write a serving manifest of what the store holds (to start from)")
    man.add_argument("--output", "-o", type=Path, help="the file to write (default: standard output)")
    man.set_defaults(run=_manifest)
    tun = commands.add_parser("tune", help="measure batch size x threads x precision; print the best config")
    tun.add_argument("name", help="an exported model")
    tun.add_argument("--p99-ms", type=float, help="latency budget per row (estimate; see exporters/tune.py)")
    tun.add_argument("--write", type=Path, help="merge the chosen settings into this ZOOSERVE_CONFIG file")
    tun.add_argument(
        "--batch-sizes", default="1,2,4,8,16,32", help="comma-separated batch sizes to measure (default 1,2,4,8,16,32)"
    )
    tun.add_argument("--threads", help="intra-op thread counts to try, e.g. 1,2 (default: 1..cores)")
    tun.add_argument("--seconds", type=float, default=1.0, help="measuring time per cell")
    tun.set_defaults(run=_tune)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "export" and sum((bool(args.name), args.all, bool(args.manifest))) != 1:
        print("zoo export: give a model name, --all or --manifest FILE", file=sys.stderr)
        return 2
    if args.command == "export" and args.all and args.weights:
        print("zoo export: --weights applies to one model, not --all", file=sys.stderr)
        return 2
    if args.command == "export" and args.pretrained and args.weights:
        print("zoo export: give --weights or --pretrained, not both", file=sys.stderr)
        return 2
    try:
        if args.command in ("list", "info", "manifest"):
            register_stored()  # models `zoo import` put in the store
        args.run(args)
    except UnknownModel as exc:
        print(f"zoo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line, no traceback, for every expected failure
        # one line even when the message carries a file's own text (an HDF5 name, a zip entry's)
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(exc))
        print(f"zoo: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
