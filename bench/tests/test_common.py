"""How a benchmark's results replace its section of BENCHMARKS.md."""

from __future__ import annotations

from bench.common import INTRO, KEPT, TITLE, replace_section

SERVE = "## Serve"
BROKER = "## Broker"


def test_a_run_replaces_what_the_last_wrote_and_keeps_the_notes_below_it() -> None:
    text = (
        f"{TITLE}\n\n{INTRO}\n\n{SERVE}\n\nold figures\n\n{KEPT}\n\nVerdict of the old run.\n\n"
        f"{BROKER}\n\nbroker figures\n"
    )
    once = replace_section(text, SERVE, "new figures")
    assert once == (
        f"{TITLE}\n\n{INTRO}\n\n{SERVE}\n\nnew figures\n\n{KEPT}\n\nVerdict of the old run.\n\n"
        f"{BROKER}\n\nbroker figures\n"
    )
    # Running again keeps the notes once, not twice.
    assert replace_section(once, SERVE, "newer figures") == once.replace("new fig", "newer fig")


def test_a_section_without_notes_or_missing_gets_the_line_that_keeps_them() -> None:
    text = f"{TITLE}\n\n{INTRO}\n\n{SERVE}\n\nold figures\n"
    assert (
        replace_section(text, SERVE, "new") == f"{TITLE}\n\n{INTRO}\n\n{SERVE}\n\nnew\n\n{KEPT}\n"
    )
    added = replace_section(text, BROKER, "broker")
    assert added == f"{text}\n{BROKER}\n\nbroker\n\n{KEPT}\n"
    assert (
        replace_section("", SERVE, "first") == f"{TITLE}\n\n{INTRO}\n\n{SERVE}\n\nfirst\n\n{KEPT}\n"
    )
