#!/usr/bin/env python3
"""Instructions per session by where the code comes from, from a callgrind dump.

    callgrind-origin.py DUMP SESSIONS

Used by scripts/bench-instructions.sh. Sums each function's self cost
(instructions executed in it, not in what it calls) by the source file the
instructions were compiled from: code inlined from a crate counts to that
crate, wherever it was inlined. Origins: each crate from cargo's registry
or git checkouts by name, "rust std/core/alloc" (/rustc/...), "ftpgate"
(any other Rust source: the binary's own, from whichever checkout built it),
"glibc malloc/free", "glibc other", and "no debug info". Prints a Markdown
table of the largest origins, instructions per session and share.
"""

import re
import sys
from collections import Counter

# Name compression: "(N) name" defines N, "(N)" refers to it. Files (fl, fi,
# fe and their call-side forms) share one table, functions another, objects
# a third.
TABLE_OF = {"fl": "file", "fi": "file", "fe": "file", "cfi": "file", "cfl": "file",
            "fn": "fn", "cfn": "fn", "ob": "ob", "cob": "ob"}
COMPRESSED = re.compile(r"\((\d+)\)(?: (.*))?$")
CRATE = re.compile(r"/registry/src/[^/]+/([A-Za-z0-9_.-]+?)-\d+\.\d+\.\d+[^/]*/"
                   r"|/git/checkouts/([A-Za-z0-9_.-]+?)-[0-9a-f]{16}/")


def self_costs(path):
    """Self cost (first event, Ir) per source file."""
    tables = {"file": {}, "fn": {}, "ob": {}}
    costs = Counter()
    block_file = None  # fl= of the current function block
    cur_file = None    # fl, or the fi/fe file that inlined code came from
    after_call = False
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            key, eq, value = line.partition("=")
            if eq and key in TABLE_OF:
                table = tables[TABLE_OF[key]]
                m = COMPRESSED.match(value)
                if m:
                    if m.group(2) is not None:
                        table[m.group(1)] = m.group(2)
                    value = table.get(m.group(1), "?")
                if key == "fl":
                    block_file = cur_file = value
                elif key in ("fi", "fe"):
                    cur_file = value
                elif key == "fn":
                    cur_file = block_file
                continue
            if eq and key == "calls":
                after_call = True  # the next cost line is the call's inclusive cost
                continue
            if line[0].isdigit() or line[0] in "+-*":
                if after_call:
                    after_call = False
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    costs[cur_file or "?"] += int(parts[1])
    return costs


def origin(path):
    m = CRATE.search(path)
    if m:
        return m.group(1) or m.group(2)
    if "/rustc/" in path:
        return "rust std/core/alloc"
    if path.endswith(".rs"):
        return "ftpgate"
    if path.startswith("./malloc/"):
        return "glibc malloc/free"
    if path.startswith("./"):
        return "glibc other"
    return "no debug info"


def main():
    if len(sys.argv) != 3 or not sys.argv[2].isdigit() or int(sys.argv[2]) == 0:
        sys.exit("usage: callgrind-origin.py DUMP SESSIONS (a positive count)")
    dump, sessions = sys.argv[1], int(sys.argv[2])
    by_origin = Counter()
    for path, ir in self_costs(dump).items():
        by_origin[origin(path)] += ir
    total = sum(by_origin.values())
    if total == 0:
        sys.exit(f"callgrind-origin.py: no costs in {dump}")
    print("| origin of the code | instructions per session | share |")
    print("|---|---|---|")
    shown = 0
    for name, ir in by_origin.most_common():
        if ir * 200 < total:  # under 0.5 %: summed below
            break
        print(f"| {name} | {ir // sessions:,} | {100 * ir / total:.1f} % |")
        shown += ir
    if total > shown:
        print(f"| (each under 0.5 %) | {(total - shown) // sessions:,} | {100 * (total - shown) / total:.1f} % |")
    print(f"| total | {total // sessions:,} | 100 % |")


if __name__ == "__main__":
    main()
