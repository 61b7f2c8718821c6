"""docs/own-data.md: the Python example of diagnosing a DataFrame without a language column runs
and prints what the page says it prints."""

import re
from pathlib import Path

DOC = Path(__file__).parents[1] / "docs" / "own-data.md"


def test_dataframe_example_prints_what_the_page_shows(capsys):
    text = DOC.read_text()
    section = text.split("### From Python: a DataFrame or a `datasets.Dataset`", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shown = re.search(r"prints\n\n```\n(.*?)```", section, re.S).group(1)
    exec(compile(code, f"{DOC}:diagnose", "exec"), {})
    assert capsys.readouterr().out == shown
