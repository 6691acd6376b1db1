"""Every command's --help has an example; run --help lists the config keys (from the dataclasses);
config errors name their key and come all at once (sarclip_train and mmsar configs)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from d2c.cli import main as d2c_main
from mmsar.cli import main as mmsar_main
from sarclip_train.cli import main as train_main
from sarclip_train.config import config_keys, load_config


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    yield path
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name)


@pytest.mark.parametrize("main", [d2c_main, mmsar_main, train_main], ids=["d2c", "mmsar", "sarclip-train"])
def test_every_help_has_an_example(main):
    paths = list(_commands(main))
    assert len(paths) >= 3
    for path in paths:
        res = CliRunner().invoke(main, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        assert "Example:" in res.output, path
        assert "%%" not in res.output, path


def test_help_texts_named_in_the_issue():
    run = CliRunner().invoke(train_main, ["run", "--help"]).output
    keys = config_keys()
    assert {k for k, _, _ in keys} >= {"data.train", "model.max_tiles", "optim.lr", "run.batch_size", "eval.tasks"}
    for key, default, text in keys:
        assert f"{key:<26} {default:<12} {text}".rstrip() in run
    assert "run.batch_size             32" in run and "per rank, per micro-batch" in run
    ev = CliRunner().invoke(train_main, ["eval", "--help"]).output
    assert "Comma-separated tasks" in ev and "Folder for results.json" in ev
    assert "Parquet file to write" in CliRunner().invoke(train_main, ["embed", "--help"]).output
    assert "YOLO" in CliRunner().invoke(d2c_main, ["--help"]).output
    assert "2-98% clip" in CliRunner().invoke(d2c_main, ["convert", "--help"]).output


def test_train_config_lists_every_error(tmp_path):
    from d2c.errors import UsageError

    p = tmp_path / "t.toml"
    p.write_text('[run]\nbatch_size = "big"\nepochz = 2\n[modle]\narch = "x"\n[loss]\nkind = "l2"\n')
    with pytest.raises(UsageError) as err:
        load_config(p)
    lines = str(err.value).splitlines()
    assert len(lines) == 3 and all(line.startswith(f"{p}: ") for line in lines)
    assert "run.batch_size must be an integer" in lines[0]
    assert "unknown key 'run.epochz' (did you mean 'epochs'?)" in lines[1]
    assert "unknown section [modle] (did you mean 'model'?)" in lines[2]
    p.write_text('[loss]\nkind = "l2"\n[run]\nbatch_size = 0\n')  # range checks: all of them too
    with pytest.raises(UsageError) as err:
        load_config(p)
    assert str(err.value).splitlines() == [f"{p}: loss.kind must be 'clip' or 'siglip', got 'l2'",
                                           f"{p}: run.batch_size must be >= 1"]
    res = CliRunner().invoke(train_main, ["run", "--set", "run.epochs=0", "--set", "model.max_tiles=99"])
    assert res.exit_code == 2 and "run.epochs must be >= 1" in res.output and "max_tiles must be in" in res.output


def test_mmsar_config_lists_every_error_and_names_the_typo(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text('[[source]]\nname = "a"\ninput = "x"\n[captions]\nper_image = "five"\n[images]\nmode = "e"\n')
    res = CliRunner().invoke(mmsar_main, ["build", "--config", str(p)])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert lines[0] == (f"mmsar build: error: {p}: source: unknown key (did you mean 'sources'?) (known: "
                        "captions, chips, dedupe, images, name, out, output, sarcount, seed, sources, splits, unit_scenes, work)")
    assert lines[1:] == [f"{p}: sources: required key is missing",
                         f"{p}: captions.per_image: expected an integer, got str 'five'",
                         f"{p}: images.mode: must be 'embed' or 'reference', got 'e'"]
