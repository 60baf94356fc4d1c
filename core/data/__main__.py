"""``python -m core.data`` lists the data sources; ``python -m core.data describe NAME [--json]``
prints {name, num_classes, classes, splits, channels, image_size}. Bad input: one line on stderr, exit 2."""

from __future__ import annotations

import argparse
import json
import sys

from core.data.base import DataError
from core.data.registry import describe, source_specs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.data", description="ArchScope data sources")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("list", help="list the data sources (the default)")
    d = sub.add_parser("describe", help="describe one source without decoding its images")
    d.add_argument("name", help="source name, e.g. shapes, fashion-mnist, imagefolder:PATH, listfile:PATH")
    d.add_argument("--json", action="store_true", help="print JSON")
    d.add_argument("--image-size", type=int, default=None)
    d.add_argument("--root", default=None, help="folder holding the files of a torchvision source")
    d.add_argument("--data-seed", type=int, default=None,
                   help="seed of the dataset itself (shapes images, carved val/test splits); default 0")
    args = parser.parse_args(argv)

    if args.command in (None, "list"):
        for spec in source_specs():
            shown = spec.name + (":PATH" if spec.needs_path else "")
            print(f"{shown:<16} {spec.description}")
        return 0
    try:
        info = describe(args.name, image_size=args.image_size, root=args.root, data_seed=args.data_seed)
    except DataError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)   # always one line
        return 2
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        splits = info["splits"]
        print(f"{info['name']}: {info['num_classes']} classes, {info['channels']} channel(s), "
              f"{info['image_size']}x{info['image_size']} px, train/val/test "
              f"{splits['train']}/{splits['val']}/{splits['test']}")
        print("classes: " + ", ".join(info["classes"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
