"""The fonts the window ships cover what it shows: every character of the interface's strings
(both languages) has a glyph in one of the shipped faces, the faces are declared where the UI
loads them, and their licence travels with them. The desktop end-to-end test checks that
they render in the real window; this one names the character a new string brings that the
subsets lack (rerun ui/scripts/subset_fonts.py)."""
import re
import sys
from pathlib import Path

from fontTools.ttLib import TTFont

ROOT = Path(__file__).resolve().parents[2]
FONTS = ROOT / "ui/src/assets/fonts"
sys.path.insert(0, str(ROOT / "ui/scripts"))
import subset_fonts  # noqa: E402


def cmap(name):
    return set(TTFont(FONTS / name)["cmap"].getBestCmap())


def ui_text():
    return subset_fonts.ui_characters()


def test_every_character_of_the_interface_has_a_shipped_glyph():
    chars = {c for c in ui_text() if c.isprintable() and not c.isspace()}
    latin = cmap("inter-400.woff2")
    cjk = cmap("noto-sans-sc-400.woff2")
    shipped = latin | cjk | cmap("symbols-400.woff2")
    missing = sorted(c for c in chars if ord(c) not in shipped)
    assert not missing, (f"no shipped font has {''.join(missing)!r} "
                         f"({', '.join(f'U+{ord(c):04X}' for c in missing)}): "
                         "rerun ui/scripts/subset_fonts.py")


def test_each_weight_covers_the_same_characters():
    chars = ui_text()
    han = {ord(c) for c in chars if subset_fonts.is_cjk(c)}
    assert len(han) > 300, "the 简体中文 messages are where the script looks"
    for name in ("noto-sans-sc-400.woff2", "noto-sans-sc-700.woff2"):
        lacking = han - cmap(name)
        assert not lacking, f"{name} lacks {''.join(map(chr, sorted(lacking)))}"
    ascii_ = set(range(0x20, 0x7F))
    for name in ("inter-400.woff2", "inter-600.woff2", "inter-700.woff2", "jetbrains-mono-400.woff2"):
        assert ascii_ <= cmap(name), f"{name} lacks printable ASCII"


def test_the_faces_are_declared_small_and_licensed():
    css = (ROOT / "ui/src/fonts.css").read_text()
    declared = set(re.findall(r'url\("\./assets/fonts/([^"]+)"\)', css))
    shipped = {p.name for p in FONTS.glob("*.woff2")}
    assert declared == shipped
    for family in ("Whetstone UI", "Whetstone CJK", "Whetstone Mono", "Whetstone Symbols"):
        assert f'font-family: "{family}"' in css
    styles = (ROOT / "ui/src/styles.css").read_text()
    assert '@import "./fonts.css"' in styles
    assert re.search(r'--font-ui:\s*"Whetstone UI", "Whetstone CJK"', styles)
    total = sum((FONTS / n).stat().st_size for n in shipped)
    assert total < 1024 * 1024, f"the shipped fonts weigh {total / 1024:.0f} KiB"
    licence = (ROOT / "ui/public/licenses/fonts-OFL.txt").read_text()
    assert "SIL OPEN FONT LICENSE Version 1.1" in licence
    for name in ("Inter", "JetBrains Mono", "Noto Sans CJK SC", "DejaVu Sans"):
        assert name in licence
    assert "Bitstream" in (ROOT / "ui/public/licenses/fonts-DejaVu.txt").read_text()
