"""The code's shape: no import circle among a crate's top-level modules, and source files
that stay readable (at most 800 lines outside their tests).

A module "uses" another when its non-test code names `crate::other` (or, from a file
directly under src/, `super::other`). Test modules are left out: a test may reach anywhere.
Files still over the line limit are listed in OVERSIZED with the size they may not exceed;
the list only shrinks (a listed file that has come under the limit fails the test until its
entry is removed).
"""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 800

# Files not yet split, with their current size as a ceiling (docs/ARCHITECTURE.md, "Layout").
OVERSIZED = {
}

TEST_MODULE = re.compile(r"^#\[cfg\(test\)\]\s*\n(?:pub(?:\(crate\))? )?mod \w+ \{", re.M)


def production_code(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    m = TEST_MODULE.search(text)
    return text if m is None else text[: m.start()]


def crate_sources():
    roots = sorted(ROOT.glob("crates/*/src")) + [ROOT / "src-tauri" / "src"]
    return [r for r in roots if r.is_dir()]


def module_graph(src: Path):
    modules: dict[str, list[Path]] = {}
    for p in sorted(src.rglob("*.rs")):
        rel = p.relative_to(src).parts
        top = rel[0][:-3] if len(rel) == 1 else rel[0]
        modules.setdefault("<root>" if top in ("lib", "main") else top, []).append(p)
    edges = {m: set() for m in modules}
    for m, files in modules.items():
        for f in files:
            code = production_code(f)
            # strip comments so a doc link to another module is not a use
            code = re.sub(r"//[^\n]*", "", code)
            names = set(re.findall(r"\bcrate::(\w+)", code))
            for group in re.findall(r"\bcrate::\{([^}]*)\}", code):
                names |= set(re.findall(r"(?:^|[,{\s])(\w+)", group))
            if len(f.relative_to(src).parts) == 1 and m != "<root>":
                names |= set(re.findall(r"\bsuper::(\w+)", code))
            edges[m] |= {n for n in names if n in modules and n != m}
    return edges


def circles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_circle_finder_sees_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_among_a_crates_top_level_modules():
    found = {}
    for src in crate_sources():
        edges = module_graph(src)
        for comp in circles(edges):
            found[str(src.relative_to(ROOT))] = {m: sorted(edges[m] & set(comp)) for m in comp}
    assert not found, f"import circles: {found}"


def test_source_files_stay_under_the_line_limit():
    over, shrunk = [], []
    for src in crate_sources():
        for f in sorted(src.rglob("*.rs")):
            rel = str(f.relative_to(ROOT))
            n = production_code(f).count("\n")
            ceiling = OVERSIZED.get(rel, MAX_LINES)
            if n > ceiling:
                over.append(f"{rel}: {n} lines (limit {ceiling})")
            elif rel in OVERSIZED and n <= MAX_LINES:
                shrunk.append(f"{rel}: {n} lines, remove it from OVERSIZED")
    missing = [k for k in OVERSIZED if not (ROOT / k).exists()]
    assert not over and not shrunk and not missing, (over, shrunk, missing)
