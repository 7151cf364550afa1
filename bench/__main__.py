"""Run benchmarks by name: `python -m bench` runs the quick ones (retrieval, classifier,
dashboard);
`python -m bench ingestion` the knowledge import one, and so on."""

from __future__ import annotations

import importlib
import sys

QUICK = ["retrieval", "classifier", "dashboard"]


def main() -> None:
    names = sys.argv[1:] or QUICK
    for name in names:
        print(f"\n## {name}\n")
        module = importlib.import_module(f"bench.{name}")
        module.main([])


if __name__ == "__main__":
    main()
