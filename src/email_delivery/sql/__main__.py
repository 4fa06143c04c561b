"""``python -m email_delivery.sql [--check | --write]``: the placeholder regions of the SQL
files against ``email_delivery.rules``.

``--check`` (the default) lists every stale region and exits 1 if there is one; ``--write``
rewrites the stale regions in place (run it after changing a rule, then write the revision
with ``python -m email_delivery.revision``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from email_delivery import sql


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m email_delivery.sql")
    parser.add_argument("--write", action="store_true", help="refresh stale regions in place")
    parser.add_argument("--check", action="store_true", help="exit 1 if a region is stale")
    args = parser.parse_args(argv)
    root = Path(sql.__file__).parent
    stale = 0
    for path in sorted(root.rglob("*.sql")):
        text = path.read_text(encoding="utf-8")
        names = sql.stale_regions(text)
        if not names:
            continue
        stale += 1
        relative = path.relative_to(root)
        if args.write:
            path.write_text(sql.refresh(text, where=str(relative)), encoding="utf-8")
            print(f"refreshed {relative}: {', '.join(sorted(set(names)))}")
        else:
            print(f"stale {relative}: {', '.join(sorted(set(names)))}")
    return 1 if stale and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
