"""The convert CLI: orbax output + load_converted parity, and one-line errors with exit code 2."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from retext_jax.models import bert, pretrained, vit
from retext_jax.tools import convert

torch = pytest.importorskip("torch", reason="transformers+torch CPU builds the reference models")
from encoder_utils import max_abs_diff, save_tiny_bert, save_tiny_vit, torch_out  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  root = tmp_path_factory.mktemp("hf")
  return {
    "root": root,
    "vit": (root / "vit", save_tiny_vit(root / "vit")),
    "bert": (root / "bert", save_tiny_bert(root / "bert")),
  }


def test_vit_convert_then_load_matches_hf(folders, tmp_path, capsys):
  folder, model = folders["vit"]
  out = tmp_path / "vit_256x128"
  rc = convert.main(
    ["--from", str(folder), "--kind", "vit", "--out", str(out), "--image-size", "256,128"]
  )
  assert rc == 0 and "wrote" in capsys.readouterr().out
  meta = json.loads((out / "model_config.json").read_text())
  assert meta["kind"] == "vit" and meta["config"]["image_size"] == [256, 128]
  params, config = pretrained.load_converted(out)
  assert isinstance(config, vit.ViTConfig) and config.grid == (16, 8)
  x = np.random.default_rng(0).normal(size=(2, 256, 128, 3)).astype(np.float32)
  ours = jax.jit(vit.ViT(config).apply)({"params": params}, x)
  ref = torch_out(model, pixel_values=x.transpose(0, 3, 1, 2).copy(), interpolate_pos_encoding=True)
  assert max_abs_diff(ours["tokens"], ref["tokens"]) <= 1e-4
  # Writing twice into the same folder is refused rather than silently mixed.
  rc = convert.main(["--from", str(folder), "--kind", "vit", "--out", str(out)])
  assert rc == 2 and "already exists" in capsys.readouterr().err


def test_bert_convert_then_load(folders, tmp_path):
  folder, model = folders["bert"]
  assert convert.main(["--from", str(folder), "--kind", "bert", "--out", str(tmp_path / "b")]) == 0
  params, config = pretrained.load_converted(tmp_path / "b")
  assert isinstance(config, bert.BertConfig)
  ids = np.random.default_rng(0).integers(0, 100, (2, 9))
  ours = bert.Bert(config).apply({"params": params}, ids)
  assert max_abs_diff(ours["pooled"], torch_out(model, input_ids=ids)["pooled"]) <= 1e-4


def _run_cli(*args):
  return subprocess.run(
    [sys.executable, "-m", "retext_jax.tools.convert", *args],
    capture_output=True,
    text=True,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )


def test_wrong_kind_says_the_key_table_does_not_match(folders, tmp_path):
  proc = _run_cli("--from", str(folders["bert"][0]), "--kind", "vit", "--out", str(tmp_path / "x"))
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in proc.stderr
  assert "HF ViTModel key table" in lines[0] and "is the model kind right?" in lines[0]
  assert "embeddings.word_embeddings.weight" in lines[0]  # names keys it found
  assert not (tmp_path / "x").exists()


def test_errors_are_one_line_with_exit_code_2(folders, tmp_path, capsys):
  def run(*args):
    rc = convert.main(list(args))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    return err

  err = run("--from", str(folders["vit"][0]), "--kind", "bert", "--out", str(tmp_path / "a"))
  assert "vocab_size" in err and "'vit'" in err
  empty = tmp_path / "empty"
  empty.mkdir()
  err = run("--from", str(empty), "--kind", "bert", "--out", str(tmp_path / "b"))
  assert f"no weights in {empty}" in err and "model.safetensors" in err

  broken = tmp_path / "broken"
  broken.mkdir()
  tensors = load_file(str(folders["bert"][0] / "model.safetensors"))
  del tensors["encoder.layer.1.output.dense.weight"]
  tensors["encoder.layer.0.intermediate.dense.bias"] = np.zeros(5, np.float32)
  save_file(tensors, str(broken / "model.safetensors"))
  (broken / "config.json").write_text((folders["bert"][0] / "config.json").read_text())
  err = run("--from", str(broken), "--kind", "bert", "--out", str(tmp_path / "c"))
  assert "1 missing: encoder.layer.1.output.dense.weight" in err
  assert "encoder.layer.0.intermediate.dense.bias -> layer_0/mlp/fc1/bias: (5,)" in err

  err = run("--from", str(empty), "--kind", "resnet", "--out", str(tmp_path / "d"))
  assert "invalid choice: 'resnet'" in err
  err = run("--from", str(empty), "--kind", "vit", "--out", "o", "--image-size", "256x128")
  assert "expected H,W" in err
  assert "--from" in run("--kind", "vit", "--out", "o")  # a missing required argument
  with pytest.raises(FileNotFoundError, match="not a converted checkpoint"):
    pretrained.load_converted(tmp_path)
