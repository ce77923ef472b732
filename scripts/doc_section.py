"""Writes a generated section into a Markdown file between `<!-- NAME: begin -->` and
`<!-- NAME: end -->` markers (added, under `heading`, after `after` or at the end when absent),
atomically, so a benchmark script's figures land in the docs as it measured them."""

import os


def write_section(doc, name, section, heading, after=None):
    text = open(doc, encoding="utf-8").read()
    begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    if begin not in text:
        block = f"\n{heading}\n\n{begin}\n{end}\n"
        text = text.replace(after, after + block, 1) if after and after in text else text + block
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    partial = doc + ".partial"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(head + begin + "\n" + section + end + tail)
    os.replace(partial, doc)
