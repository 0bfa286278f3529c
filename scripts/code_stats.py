"""Figures on the codebase's shape: the largest module and function, function-level imports
(light ones apart from the heavy libraries kept lazy on purpose), the share of functions fully
annotated, and how many source lines spell out each of a few names that should be listed once.

    python scripts/code_stats.py [src/diycnn]
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

# Libraries that take a second or more (or a lot of memory) to import: lazy on purpose.
HEAVY = ("torch", "torchvision", "timm", "cv2", "onnx", "onnxruntime", "keras", "tensorflow", "fastapi", "uvicorn",
         "scipy", "matplotlib", "sklearn", "jinja2", "PIL", "safetensors", "starlette", "pydantic", "multipart",
         "playwright")
# Names that should each be spelled out in one place (a constant, a registry), not repeated.
NAMES = {
    '"split.json"': r'["\']split\.json["\']',
    '"metrics.json"': r'["\']metrics\.json["\']',
    '"model.json"': r'["\']model\.json["\']',
    "0.15 split default": r"(?<![\d.])0\.15(?![\d])",
    "face recipes' names": r'["\']face-finetune["\']',
    "cached-feature recipe set": r'["\']linear-probe["\'],\s*["\']face-probe["\']|\{"tm", "linear-probe"',
}


def heavy(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] in HEAVY


def main(root: Path) -> None:
    files = sorted(root.rglob("*.py"))
    sizes = []
    functions = []
    lazy_light, lazy_heavy = [], []
    annotated = total = 0
    counts = {name: 0 for name in NAMES}
    for file in files:
        text = file.read_text(encoding="utf-8")
        rel = file.relative_to(root.parent)
        sizes.append((len(text.splitlines()), str(rel)))
        for name, pattern in NAMES.items():
            counts[name] += len(re.findall(pattern, text))
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                total += 1
                args = [a for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
                        if a.arg not in ("self", "cls")]
                if node.returns is not None and all(a.annotation is not None for a in args):
                    annotated += 1
                functions.append((node.end_lineno - node.lineno + 1, f"{rel}:{node.lineno} {node.name}"))
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import):
                        mods = [a.name for a in inner.names]
                    elif isinstance(inner, ast.ImportFrom):
                        mods = [("." * inner.level) + (inner.module or "")]
                    else:
                        continue
                    marked = "noqa: PLC0415 (" in text.splitlines()[inner.end_lineno - 1]
                    (lazy_heavy if marked or all(heavy(m) for m in mods) else lazy_light).append(f"{rel}:{inner.lineno}")
    sizes.sort(reverse=True)
    functions.sort(reverse=True)
    print(f"modules: {len(files)}; largest: {sizes[0][1]} {sizes[0][0]} lines; next: "
          + ", ".join(f"{n} {c}" for c, n in sizes[1:4]))
    print(f"functions: {total}; fully annotated: {annotated} ({annotated / total:.0%})")
    print("longest functions: " + "; ".join(f"{n} ({c} lines)" for c, n in functions[:6]))
    print(f"function-level imports: {len(lazy_light) + len(lazy_heavy)} "
          f"({len(lazy_heavy)} of heavy libraries or marked with their reason, {len(set(lazy_light))} of light modules, "
          "unmarked)")
    for where in sorted(set(lazy_light)):
        print(f"  light, lazy: {where}")
    print("places each name is spelled out:")
    for name, n in counts.items():
        print(f"  {name}: {n}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "src/diycnn"))
