#!/usr/bin/env python3
"""Check that src/ imports point down the stack and form no cycle.

Every `crate::<module>` path in a file under src/ is an import of that
top-level module (pubsub's parts count as pubsub; inside pubsub, the parts are
checked against their own order). Exits 1 and names every edge that points up
the stack or closes a cycle. Run: python3 scripts/check_layers.py
"""
import re
import sys
from pathlib import Path

# Top of the stack first: a module may import only modules listed after it.
LAYERS = [
    "main", "server", "session", "supervisor", "registry", "channel", "hooks", "pubsub",
    "webhooks", "metrics", "auth", "admission", "revocation", "protocol", "config", "process",
]
# Inside pubsub, the same rule among its parts.
PUBSUB = ["node", "broker", "membership", "history", "presence", "hub", "mailbox"]

ROOT = Path(__file__).resolve().parent.parent / "src"
PATH = re.compile(r"\bcrate::(\w+)(?:::(\w+))?")
SUPER = re.compile(r"\bsuper::(\w+)")
BRACES = re.compile(r"\buse crate::\{([^}]*)\}", re.S)


def code_of(path: Path) -> str:
    text = path.read_text()
    # Comments and doc comments may name any module; only code counts.
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def module_of(rel: Path) -> tuple[str, str | None]:
    parts = rel.with_suffix("").parts
    top = parts[0]
    if top == "lib":
        top = "main"
    sub = parts[1] if len(parts) > 1 and top == "pubsub" else None
    if sub == "mod":
        sub = None
    return top, sub


def main() -> int:
    edges: dict[tuple[str, str], set[str]] = {}
    for path in sorted(ROOT.rglob("*.rs")):
        rel = path.relative_to(ROOT)
        src, src_sub = module_of(rel)
        code = code_of(path)
        if "#[cfg(test)]" in code and rel.name == "tests.rs":
            continue
        targets = [(m.group(1), m.group(2)) for m in PATH.finditer(code)]
        for group in BRACES.finditer(code):
            for item in group.group(1).split(","):
                name = item.strip().split("::")[0].strip()
                if name:
                    targets.append((name, None))
        if src == "pubsub" and src_sub:
            targets += [("pubsub", m.group(1)) for m in SUPER.finditer(code)]
        for dst, dst_sub in targets:
            if dst not in LAYERS and not (ROOT / f"{dst}.rs").exists() and not (ROOT / dst).is_dir():
                continue
            if dst != src:
                edges.setdefault((src, dst), set()).add(str(rel))
            elif src == "pubsub" and src_sub and dst_sub in PUBSUB and dst_sub != src_sub:
                edges.setdefault((f"pubsub::{src_sub}", f"pubsub::{dst_sub}"), set()).add(str(rel))
    bad = []
    for (a, b), files in sorted(edges.items()):
        order = PUBSUB if a.startswith("pubsub::") else LAYERS
        name_a, name_b = a.split("::")[-1], b.split("::")[-1]
        if name_a not in order:
            bad.append(f"{a} is not placed in the stack: add it to LAYERS")
            continue
        if name_b not in order:
            bad.append(f"{b} is not placed in the stack: add it to LAYERS")
            continue
        ia, ib = order.index(name_a), order.index(name_b)
        if ib <= ia:
            bad.append(f"{a} -> {b} points up the stack ({', '.join(sorted(files))})")
    # A cycle needs an upward edge, so the list above names every cycle's edge.
    for line in bad:
        print(line)
    if "-v" in sys.argv:
        for (a, b) in sorted(edges):
            print(f"{a} -> {b}")
    print(f"{len(edges)} import edges between modules, {len(bad)} pointing up")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
