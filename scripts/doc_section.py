"""Writes a generated section into a Markdown file between `<!-- NAME: begin -->` and
`<!-- NAME: end -->` markers (added, under `heading`, after `after` or at the end when absent),
atomically, so a benchmark script's figures land in the docs as it measured them."""

import os
import re


def write_section(doc, name, section, heading, after=None):
    text = open(doc, encoding="utf-8").read()
    begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    if begin not in text:
        block = f"\n{heading}\n\n{begin}\n{end}\n" if heading else f"\n\n{begin}\n{end}"
        text = text.replace(after, after + block, 1) if after and after in text else text + block
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    partial = doc + ".partial"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(head + begin + "\n" + section + end + tail)
    os.replace(partial, doc)


# The instruction sets that decide which fast paths a runtime has (fp32 AVX-512, int8 VNNI, bf16).
ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def cpu_isa():
    """This CPU's model name, and which of ISA it has and lacks."""
    name, flags = "unknown CPU", set()
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown CPU":
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return name, [x for x in ISA if x in flags], [x for x in ISA if x not in flags]


def write_cpu_section(doc, name, section, heading):
    """write_section for this kind of CPU: the section `NAME on ISA` (the ISA it has), so that
    each kind keeps its own figures; a new kind's goes after the last one of `name`, or at the end
    under `heading` if there is none."""
    key = " ".join(cpu_isa()[1]) or "none of " + " ".join(ISA)
    text = open(doc, encoding="utf-8").read()
    others = re.findall(re.escape(f"<!-- {name} on ") + r"[^>]*: end -->", text)
    write_section(doc, f"{name} on {key}", section, None if others else heading,
                  after=others[-1] if others else None)
