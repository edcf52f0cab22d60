"""Regenerate docs/benchmarks.md's generated section from benchmark JSON files.

    python scripts/bench_report.py FILE.json [FILE.json ...]               # print the section
    python scripts/bench_report.py FILE.json [...] --doc docs/benchmarks.md  # write it there

FILE is what `convnet-gpu bench --json FILE` or `pytest tests/benchmarks --benchmark-only
--benchmark-json=FILE` wrote. With --doc the section replaces the one between the
bench-report markers (appended the first time); the rest of the document is left alone.
How the tables are made: convnet_gpu/bench_report.py.
"""

import argparse
import json
from pathlib import Path

from convnet_gpu.bench_report import render, replace_section
from convnet_gpu.fileio import write_bytes_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", metavar="FILE.json")
    parser.add_argument("--doc", metavar="MARKDOWN", help="write the section into this file")
    args = parser.parse_args()
    files = [(Path(f).name, json.loads(Path(f).read_text(encoding="utf-8"))) for f in args.files]
    section = render(files)
    if args.doc is None:
        print(section, end="")
        return
    doc = Path(args.doc)
    write_bytes_atomic(doc, replace_section(doc.read_text(encoding="utf-8"), section).encode())
    print(f"wrote the generated section of {doc} from {len(files)} file(s)")


if __name__ == "__main__":
    main()
