"""Every number of the README's findings is printed by the notebook that measures it: a
block ``<!-- printed by notebooks/X.ipynb[, notebooks/Y.ipynb] -->`` … ``<!-- /printed -->``
holds only numbers that those committed notebooks' outputs print."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
BLOCK = re.compile(r"<!-- printed by (.+?) -->(.*?)<!-- /printed -->", re.S)


def unprinted(text: str, printed: str) -> list[str]:
    """The numbers of ``text`` (e.g. ``+1.63``, ``76.9%``, ``1.5e-06``, ``90``) that
    ``printed`` does not hold as a whole number: ``0.30`` is not printed by ``0.305``,
    nor ``8`` by ``18``. A citation's year (``Michel et al. 2019``) is not a finding."""
    text = re.sub(r"(et al\.,?) \d{4}", r"\1", text)
    numbers = re.findall(r"(?<![\w.])[+-]?\d+(?:\.\d+)?(?:e[+-]\d+)?%?(?![\w]|\.\d)", text)
    return [
        number for number in numbers
        if not re.search(rf"(?<![\d.]){re.escape(number)}(?!\d|\.\d)", printed)
    ]  # fmt: skip


def outputs(notebook: str) -> str:
    cells = json.loads((ROOT / notebook).read_text())["cells"]
    return json.dumps([cell.get("outputs", []) for cell in cells], ensure_ascii=False)


def blocks() -> list[tuple[str, str]]:
    return BLOCK.findall((ROOT / "README.md").read_text())


def test_the_readme_states_its_findings_in_checked_blocks():
    found = {name.strip() for names, _ in blocks() for name in names.split(",")}
    assert {"notebooks/report.ipynb", "notebooks/sinks.ipynb",
            "notebooks/effects.ipynb"} <= found  # fmt: skip


@pytest.mark.parametrize("names, text", blocks(), ids=lambda v: v[:40] if len(v) < 80 else "")
def test_every_number_of_a_block_is_printed_by_its_notebooks(names, text):
    printed = "".join(outputs(name.strip()) for name in names.split(","))
    assert len(unprinted(text, "")) >= 3  # the block states its numbers
    assert unprinted(text, printed) == []


def test_a_stale_number_is_caught():
    printed = outputs("notebooks/effects.ipynb")
    assert unprinted("costs +1.64 nats and +1.63", printed) == ["+1.64"]
    assert unprinted("0.30 and 0.3", "0.305 and 10.30 and 0.3,") == ["0.30"]
    assert unprinted("higher on 7 of 8 (Gu et al. 2025)", "on 8 of 8 and 18") == ["7"]
