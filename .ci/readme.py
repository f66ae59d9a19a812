#!/usr/bin/env python3
"""Extracts what CI executes from README.md, so CI runs exactly what the README says.

  readme.py test-command README.md   the first line of the code block after <!-- ci:test-command
  readme.py examples README.md       the code blocks between <!-- ci:examples:begin/end -->
  readme.py blocks FILE NAME         the code blocks between <!-- ci:NAME:begin/end --> in FILE
"""
import re
import sys


def code_blocks(text):
    return re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)


def main():
    what, path = sys.argv[1], sys.argv[2]
    text = open(path, encoding="utf-8").read()
    if what == "test-command":
        marker = text.index("<!-- ci:test-command")
        block = code_blocks(text[marker:])[0]
        print(block.strip().splitlines()[0])
    elif what in ("examples", "blocks"):
        name = sys.argv[3] if what == "blocks" else "examples"
        begin = text.index(f"<!-- ci:{name}:begin -->")
        end = text.index(f"<!-- ci:{name}:end -->")
        print("\n".join(code_blocks(text[begin:end])))
    else:
        sys.exit(f"unknown: {what}")


if __name__ == "__main__":
    main()
