"""ArchScope data sources: ``python -m core.data [list]`` lists them; ``python -m core.data describe NAME [--json]``
prints {name, num_classes, classes, splits, channels, image_size} without decoding images.

Bad input (unknown source, missing folder): one line on stderr, exit 2.
"""

from __future__ import annotations

import json
import sys
from typing import Sequence

from core import cli
from core.data.base import DataError
from core.data.registry import describe, source_specs


def build_parser() -> cli.Parser:
    """``list`` (the default) and ``describe NAME``."""
    parser = cli.parser("python -m core.data", __doc__)
    sub = parser.add_subparsers(dest="command", parser_class=cli.Parser)
    sub.add_parser("list", help="list the data sources (the default)")
    d = sub.add_parser("describe", help="describe one source without decoding its images",
                       formatter_class=parser.formatter_class)
    d.add_argument("name", help="source name, e.g. shapes, fashion-mnist, imagefolder:PATH, listfile:PATH")
    cli.add_json(d)
    d.add_argument("--image-size", type=int, default=None, help="side of the square images (None: the source's own)")
    d.add_argument("--root", default=None, help="folder holding the files of a torchvision source (None: the cache)")
    d.add_argument("--data-seed", type=int, default=0,
                   help="seed of the dataset itself (shapes images, carved val/test splits)")
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in (None, "list"):
        for spec in source_specs():
            shown = spec.name + (":PATH" if spec.needs_path else "")
            print(f"{shown:<16} {spec.description}")
        return 0
    try:
        info = describe(args.name, image_size=args.image_size, root=args.root, data_seed=args.data_seed)
    except DataError as e:
        raise DataError(" ".join(str(e).split())) from None   # always one line
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
    else:
        splits = info.splits
        print(f"{info.name}: {info.num_classes} classes, {info.channels} channel(s), "
              f"{info.image_size}x{info.image_size} px, train/val/test "
              f"{splits['train']}/{splits['val']}/{splits['test']}")
        print("classes: " + ", ".join(info.classes))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (2 with one stderr line for bad input)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
