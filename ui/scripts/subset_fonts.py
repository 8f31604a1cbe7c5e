"""Make the fonts the window ships: WOFF2 subsets of Inter (Latin UI text), JetBrains Mono
(figures and code), Noto Sans CJK SC (the 简体中文 interface) and DejaVu Sans (the few
symbols the others lack), each cut down to the characters the interface's own strings use,
into ui/src/assets/fonts/.

    python ui/scripts/subset_fonts.py [--source DIR]

The sources are Debian's font packages (fonts-inter, fonts-jetbrains-mono, fonts-noto-cjk),
fetched with `apt-get download` and unpacked into a temporary folder — nothing is installed
on the system. `--source` takes a folder where they are already unpacked (`dpkg-deb -x`).
Needs fontTools and brotli (tests/python/requirements.txt). Run it again whenever a string
brings a character the subsets lack: tests/python/test_fonts.py says which.

Inter, JetBrains Mono and Noto Sans CJK SC are under the SIL Open Font License 1.1, DejaVu
under the Bitstream Vera licence; both texts go into ui/public/licenses/, so they are inside
the built app.
"""
import argparse
import subprocess
import tempfile
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTCollection, TTFont

UI = Path(__file__).resolve().parent.parent
OUT = UI / "src" / "assets" / "fonts"
# public/ goes into the built front end as is, so the licence is inside every package
LICENCE_OUT = UI / "public" / "licenses" / "fonts-OFL.txt"
PACKAGES = ["fonts-inter", "fonts-jetbrains-mono", "fonts-noto-cjk"]

# (output name, source file under the unpacked root, the face inside a collection or None,
#  which characters it keeps)
FACES = [
    ("inter-400.woff2", "usr/share/fonts/opentype/inter/Inter-Regular.otf", None, "latin"),
    ("inter-600.woff2", "usr/share/fonts/opentype/inter/Inter-SemiBold.otf", None, "latin"),
    ("inter-700.woff2", "usr/share/fonts/opentype/inter/Inter-Bold.otf", None, "latin"),
    ("jetbrains-mono-400.woff2", "usr/share/fonts/truetype/jetbrains-mono/JetBrainsMono-Regular.ttf",
     None, "latin"),
    ("noto-sans-sc-400.woff2", "usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
     "Noto Sans CJK SC", "cjk"),
    ("noto-sans-sc-700.woff2", "usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
     "Noto Sans CJK SC", "cjk"),
    # the few symbols neither has (▸ ▾ ☾ ✎ ⟦ ⟧), from the DejaVu Sans the repository keeps
    ("symbols-400.woff2", str(UI.parent / "assets/fonts/DejaVuSans.ttf"), None, "symbols"),
]
DEJAVU_LICENCE = UI.parent / "assets/fonts/DejaVuSans-LICENSE.txt"
LICENCE = "usr/share/doc/fonts-noto-cjk/copyright"


def is_cjk(c):
    """Han ideographs, CJK punctuation and full-width forms: what the CJK face must carry."""
    o = ord(c)
    return (0x2E80 <= o <= 0x2FDF or 0x3000 <= o <= 0x303F or 0x3100 <= o <= 0x312F
            or 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF
            or 0xFE30 <= o <= 0xFE4F or 0xFF00 <= o <= 0xFFEF)


def ui_characters():
    """Every character in the front end's sources (messages, components, styles)."""
    chars = set()
    for p in (UI / "src").rglob("*"):
        if p.suffix in (".ts", ".svelte", ".css", ".html") and ".test." not in p.name:
            chars.update(p.read_text(encoding="utf-8"))
    return chars


def wanted(kind, chars):
    if kind == "symbols":
        keep = {c for c in chars if ord(c) > 0x2000 and not is_cjk(c)}
    elif kind == "cjk":
        # the Han characters and CJK punctuation, and the symbols the Latin faces lack
        keep = {c for c in chars if ord(c) > 0x2000}
    else:
        # all of printable ASCII and Latin-1 (names, paths, numbers), plus the typography
        # the strings use (dashes, quotes, arrows)
        keep = {chr(o) for o in range(0x20, 0x7F)} | {chr(o) for o in range(0xA0, 0x180)}
        keep |= {c for c in chars if ord(c) > 0x7F and not is_cjk(c)}
    return "".join(sorted(keep))


def load(path, face):
    if face is None:
        return TTFont(path)
    for font in TTCollection(path).fonts:
        if font["name"].getDebugName(1) == face:
            return font
    raise SystemExit(f"{path}: no face named {face!r}")


def fetch_sources(root):
    subprocess.run(["apt-get", "download", *PACKAGES], cwd=root, check=True)
    for deb in sorted(Path(root).glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", help="a folder with the font packages already unpacked")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.source) if args.source else Path(tmp)
        if not args.source:
            fetch_sources(root)
        chars = ui_characters()
        OUT.mkdir(parents=True, exist_ok=True)
        notices = {}
        for name, src, face, kind in FACES:
            font = load(root / src, face)
            family = font["name"].getDebugName(16) or font["name"].getDebugName(1)
            notices[family] = (font["name"].getDebugName(0), font["name"].getDebugName(13))
            opts = subset.Options()
            opts.flavor = "woff2"
            opts.layout_features = ["kern", "liga", "calt", "tnum", "locl", "ccmp", "mark", "mkmk"]
            opts.name_IDs = ["*"]  # keep the copyright and licence records
            opts.notdef_outline = True
            opts.hinting = False
            sub = subset.Subsetter(opts)
            sub.populate(text=wanted(kind, chars))
            sub.subset(font)
            out = OUT / name
            font.flavor = "woff2"
            font.save(out)
            print(f"{out.relative_to(UI.parent)}: {out.stat().st_size / 1024:.0f} KiB")
        write_licence(root, notices)


def write_licence(root, notices):
    """Each font's own copyright and licence records, then the licence text."""
    text = (root / LICENCE).read_text(encoding="utf-8")
    start = text.rindex("\n", 0, text.index("SIL OPEN FONT LICENSE Version 1.1")) + 1
    body = text[start:].split("\nLicense:")[0].splitlines()
    # Debian's copyright format: one leading space per line, "." for an empty line
    ofl = "\n".join("" if line.strip() == "." else line[1:] for line in body).strip()
    lines = ["The fonts the window ships (ui/src/assets/fonts/) are subsets, made by",
             "ui/scripts/subset_fonts.py, of:", ""]
    for family, (copyright, licence) in notices.items():
        if family == "DejaVu Sans":
            lines += [f"{family}: {copyright}", "  under its own licence: fonts-DejaVu.txt", ""]
            continue
        lines += [f"{family}: {copyright}", f"  {licence}", ""]
    LICENCE_OUT.parent.mkdir(parents=True, exist_ok=True)
    (LICENCE_OUT.parent / "fonts-DejaVu.txt").write_text(DEJAVU_LICENCE.read_text(encoding="utf-8"),
                                                         encoding="utf-8")
    LICENCE_OUT.write_text("\n".join(lines) + "\n" + ofl + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
