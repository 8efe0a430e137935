"""Attacks on the one-pass HTML to text converter (templates/text.py): equal to the converter before
it (tests/unit/text_reference.py) on adversarial inputs, and linear in time on each of them (10k,
100k and 1M characters: about 10x the CPU per 10x the input)."""

from __future__ import annotations

import time
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from text_reference import html_to_text as reference  # tests/unit is on sys.path (rootdir conftest)

from outpost.templates.text import html_to_text

# name -> html of about n characters
SHAPES: dict[str, Callable[[int], str]] = {
    "nested links": lambda n: "<a href=https://x.test>" * (n // 27) + "t" + "</a>" * (n // 27),
    "nested links with text": lambda n: "<a href=https://x.test>w" * (n // 28) + "</a>" * (n // 28),
    "nested links, text equal to href": lambda n: ("<a href=h>" * (n // 16) + "h" + " &nbsp;</a>" * (n // 16)),
    "nested lists": lambda n: "<ul><li>x" * (n // 9) + "</li></ul>" * (n // 30),
    "nested tables": lambda n: "<table><tr><td>x" * (n // 16),
    "pre": lambda n: "<pre>a\n b\n<pre>" * (n // 15) + "</pre>" * (n // 40),
    "entities": lambda n: "&amp;&#65;&no&#x1F600;&nbsp;" * (n // 30),
    "stray <": lambda n: "<" * n,
    "unclosed tags": lambda n: "<a" * (n // 2),
    "unclosed comments": lambda n: "<!--" * (n // 4),
    "unclosed scripts": lambda n: "<script>" * (n // 8),
    "100k tags": lambda n: "<b>x</b>" * (n // 8),
    "dropped": lambda n: "<head><title>" * (n // 13),
}


def test_adversarial_inputs_read_as_the_reference_reads_them() -> None:
    for name, make in SHAPES.items():
        for n in (100, 3_000, 30_000):
            html = make(n)
            assert html_to_text(html) == reference(html), (name, n)


def test_adversarial_inputs_are_linear() -> None:
    # Nested links were quadratic (each </a> joined all the text of the links inside it): 100k
    # characters took 72-116 ms and 1M 7.1-11.4 s (ratio ~100 per 10x); now ~10x per 10x. CPU time
    # (thread_time): a loaded machine does not stretch it; the best of two runs, a ratio bound of 25.
    for name, make in SHAPES.items():
        took = []
        for n in (10_000, 100_000, 1_000_000):
            html = make(n)
            runs = []
            for _ in range(2):
                started = time.thread_time()
                html_to_text(html)
                runs.append(time.thread_time() - started)
            took.append(max(min(runs), 0.002))
        assert took[2] < 25 * took[1] and took[2] < 5.0, (name, took)


PIECES = ["<a href=h>", "<a href='https://x.test'>", "<a>", "</a>", "h", "https://x.test", " ", "&nbsp;", "\u2003",
          "<pre>", "</pre>", "\n", "<li>", "<td>", "<br>", "<p>", "<img alt=h>", "x", "<head>", "</head>"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), max_size=40))
def test_generated_links_read_as_the_reference_reads_them(pieces: list[str]) -> None:
    html = "".join(pieces)
    assert html_to_text(html) == reference(html)
