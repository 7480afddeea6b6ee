"""The agent writes its ESC/POS commands itself (edge/printing/commands.py) so that text-only stores never load
python-escpos; these hold its bytes against python-escpos' own, the library every printer setting was tried with, for
every profile of its database: a difference in one byte fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
from escpos.capabilities import CAPABILITIES
from escpos.constants import QR_ECLEVEL_M
from escpos.printer import Dummy
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.printing.commands import Commands
from edge.printing.layout import Layout, PrintOptions
from edge.printing.lines import SIZES, Char, Style
from edge.printing.profiles import profile

_PROFILES = sorted(CAPABILITIES["profiles"])


@pytest.mark.parametrize("name", _PROFILES)
def test_each_profile_reads_as_python_escpos_reads_it_and_cuts_feeds_and_kicks_alike(name: str) -> None:
    ours, theirs = Commands(profile(name)), Dummy(profile=name)
    assert ours.profile.code_pages == theirs.profile.profile_data["codePages"]
    assert ours.profile.supports("qrCode") == bool(theirs.profile.supports("qrCode"))
    for partial in (False, True):
        ours.cut(partial=partial)
        theirs.cut(mode="PART" if partial else "FULL")
    ours.feed(6)
    theirs.print_and_feed(6)
    ours.open_drawer()
    theirs.cashdraw(2)
    assert ours.output == theirs.output


@settings(max_examples=60, deadline=None)
@given(data=st.text(max_size=300), size=st.integers(1, 16))
def test_a_native_qr_code_is_python_escpos_bytes(data: str, size: int) -> None:
    ours, theirs = Commands(profile("default")), Dummy(profile="default")
    ours.qr(data, size=size)
    theirs.qr(data, native=True, ec=QR_ECLEVEL_M, size=size)
    assert ours.output == theirs.output


_STYLES = st.builds(
    Style, bold=st.booleans(), invert=st.booleans(), underline=st.booleans(), size=st.sampled_from(SIZES)
)


@settings(max_examples=60, deadline=None)
@given(styles=st.lists(_STYLES, max_size=12), aligns=st.lists(st.sampled_from(["left", "center", "right"]), max_size=4))
def test_style_and_alignment_changes_are_python_escpos_set_calls(styles: list[Style], aligns: list[str]) -> None:
    """Lines in a run of styles: what the layout sends equals python-escpos' ``set`` with what changed (a size change
    goes out with bold and underline again, since ESC ! clears them)."""
    layout = Layout(48, PrintOptions())
    theirs = Dummy(profile="default")
    theirs._raw(layout.commands.output)
    was, align = Style(), "left"
    for n, style in enumerate(styles):
        layout.align = aligns[n % len(aligns)] if aligns else "left"
        layout.print_line([Char("x", style)])
        if layout.align != align:
            theirs.set(align=layout.align)
            align = layout.align
        resized = style.size != was.size
        changes: dict[str, object] = {}
        if resized:
            sizes = {"normal_textsize": style.size == "1x", "double_height": style.size in ("2h", "2x")}
            changes.update(sizes, double_width=style.size in ("2w", "2x"))
        if resized or style.bold != was.bold:
            changes["bold"] = style.bold
        if resized or style.underline != was.underline:
            changes["underline"] = int(style.underline)
        if style.invert != was.invert:
            changes["invert"] = style.invert
        theirs.set(**changes)
        theirs._raw(b"x\n")
        was = style
    assert layout.commands.output == theirs.output


def test_an_operators_database_in_yaml_is_read_through_python_escpos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ESCPOS_CAPABILITIES_FILE (python-escpos' own setting) may name a YAML file, which python-escpos reads and plain
    JSON cannot: its profiles are the ones the layout and the config check know."""
    capabilities = tmp_path / "capabilities.yml"
    capabilities.write_text(
        "profiles:\n  Kitchen-80:\n    codePages: {'19': CP858}\n    features: {qrCode: false, paperPartCut: true}\n"
        "encodings: {}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("ESCPOS_CAPABILITIES_FILE", str(capabilities))
    monkeypatch.setattr("escpos.capabilities.CAPABILITIES", _yaml_database(capabilities))  # as if imported now
    model = profile("Kitchen-80")
    assert model.code_pages == {"19": "CP858"} and model.supports("paperPartCut") and not model.supports("qrCode")
    with pytest.raises(KeyError):
        profile("default")  # the operator's database replaces python-escpos' own


def _yaml_database(path: Path) -> dict[str, object]:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))
