r"""Re-runs the README's "Using a trained model" commands on the demo workdir and checks that every
protocol row the README shows is what they print today.

  python benchmarks/readme_figures.py --workdir workdirs/demo [--update_docs]

The commands are read from the README's bash blocks of that section (continuation lines joined,
`$D` = the folder the demo rendered the benchmark into) and run in-process through each tool's
`main`; commands on data this machine does not have (`/data/...`, `person.jpg`) are listed as
skipped. Every table row of the protocol results they write (`<workdir>/protocols/*.md`) must
appear verbatim in the README. The pictures are written into the workdir, as the README says;
`--update_docs` copies them over the README's copies in docs/. Prints a table and writes
benchmarks/results/readme_figures.json. Exit code 1 when a row is missing or a command fails.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shlex
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the repository's packages, not benchmarks/input_pipeline.py
SECTION = "## Using a trained model"
PICTURES = ("cmc.png", "ranks.png", "reconstruction.png")
UNAVAILABLE = ("/data/", "person.jpg", "my_gallery/")  # placeholders for the user's own files


def readme_commands(readme: str, data_root: str) -> list[list[str]]:
  """argv of every `python -m retext_jax.tools.*` line in the section's bash blocks."""
  section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
  out = []
  for block in re.findall(r"```bash\n(.*?)```", section, re.S):
    for line in block.replace("\\\n", " ").splitlines():
      line = line.split("  #", 1)[0].strip()
      if line.startswith("python -m retext_jax.tools."):
        out.append(shlex.split(line.replace("$D", data_root)))
  return out


def table_rows(markdown: str) -> list[str]:
  """The data rows of a markdown table (not the header or the rule)."""
  lines = [x for x in markdown.splitlines() if x.startswith("|")]
  return [x for x in lines[2:] if not x.startswith("|---")]


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", default="workdirs/demo")
  p.add_argument("--update_docs", action="store_true", help="copy the pictures into docs/")
  p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                               "readme_figures.json"))
  args = p.parse_args()
  from retext_jax import data, inference

  readme = open(os.path.join(ROOT, "README.md")).read()
  data_root = data.data_root(inference.load(args.workdir).config)
  results, failed = [], False
  for argv in readme_commands(readme, data_root):
    tool, rest = argv[2], [a.replace("workdirs/demo", args.workdir) for a in argv[3:]]
    if any(u in a for a in rest for u in UNAVAILABLE):
      results.append({"command": " ".join(argv), "status": "skipped (placeholder data)"})
      continue
    start = time.time()
    rc = importlib.import_module(tool).main(rest)
    failed |= rc != 0
    results.append({"command": " ".join(argv), "status": f"rc {rc}",
                    "seconds": round(time.time() - start, 1)})
  rows = []
  folder = os.path.join(args.workdir, "protocols")
  for name in sorted(os.listdir(folder)):
    if name.endswith(".md"):
      for row in table_rows(open(os.path.join(folder, name)).read()):
        rows.append({"file": name, "row": row, "in_readme": row in readme})
        failed |= row not in readme
  if args.update_docs:
    for picture in PICTURES:
      shutil.copy(os.path.join(args.workdir, picture), os.path.join(ROOT, "docs", picture))
  print(f"{'status':<28} command")
  for r in results:
    print(f"{r['status']:<28} {r['command'][:140]}")
  print(f"\n{'in README':<10} protocol row")
  for r in rows:
    print(f"{'yes' if r['in_readme'] else 'NO':<10} {r['file']}: {r['row']}")
  with open(args.out, "w") as f:
    json.dump({"workdir": args.workdir, "commands": results, "rows": rows}, f, indent=2)
  print(f"wrote {args.out}" + ("; pictures copied into docs/" if args.update_docs else ""))
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
