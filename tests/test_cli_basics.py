"""The CLI: every --help works, user errors give one line and exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featuremass.cli import COMMANDS, build_parser, main

NESTED = {"data": ["info"], "cnn": ["train", "predict"]}


def _help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_lists_every_command(capsys):
    out = _help([], capsys)
    assert out.startswith("usage: featuremass")
    for name, _, _ in COMMANDS:
        assert name in out


@pytest.mark.parametrize("command", [name for name, _, _ in COMMANDS])
def test_each_subcommand_help(command, capsys):
    out = _help([command], capsys)
    assert f"usage: featuremass {command}" in out
    for sub in NESTED.get(command, []):
        assert f"usage: featuremass {command} {sub}" in _help([command, sub], capsys)


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("featuremass ")


def _assert_one_line_error(capsys, *needles):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    for needle in needles:
        assert needle in lines[0]


def test_user_error_is_one_line_exit_2(capsys, tmp_path):
    missing = tmp_path / "nonexistent"
    assert main(["data", "info", "--data", str(missing)]) == 2
    _assert_one_line_error(capsys, "featuremass data: error:", "dataset folder not found", str(missing))


def test_fetch_unreachable_is_one_line(capsys, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    urls = tmp_path / "urls.json"
    base = f"http://127.0.0.1:{port}"
    urls.write_text(json.dumps({"69pix": {"train10000": f"{base}/a.tar.gz", "valtest": f"{base}/b.tar.gz"}}))
    rc = main(["fetch", "--npix", "69", "--data", str(tmp_path / "d"), "--urls", str(urls),
               "--timeout", "2"])
    assert rc == 2
    _assert_one_line_error(capsys, "featuremass fetch: error: cannot reach", "a.tar.gz", "b.tar.gz")


def test_data_info_on_a_dataset(capsys, tmp_path):
    from featuremass.io.layout import write_split

    write_split(tmp_path, npix=8, split="val", images=np.zeros((2, 8, 8)), ids=[1, 2])
    assert main(["data", "info", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "val_images.npy" in out and "2 galaxies" in out


def test_parser_requires_a_command():
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([])
    assert exc.value.code == 2


def _options(parser, path=()):
    """(command path, action) of every option of every (sub)command."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif action.option_strings and not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield path, action


def _shown_default(action) -> list[str]:
    """The text(s) by which an option's default must appear in its help line."""
    import enum
    from pathlib import PurePath

    values = action.default if isinstance(action.default, list | tuple) else [action.default]
    return [v.value if isinstance(v, enum.Enum) else f"{v:g}" if isinstance(v, float)
            else str(v) if isinstance(v, PurePath) else str(v) for v in values]


def test_every_option_explains_itself_and_its_default():
    parser = build_parser()
    silent, hidden_default, seen = [], [], 0
    for path, action in _options(parser):
        seen += 1
        where = f"featuremass {' '.join(path)} {action.option_strings[-1]}"
        if not action.help or action.help == "==SUPPRESS==":
            silent.append(where)
            continue
        shown = parser._get_formatter()._get_help_string(action) % {"default": action.default}
        if action.nargs == 0 or action.default is None:
            continue  # a flag, or an option whose absence the help explains
        if "default" not in shown or not all(v in shown for v in _shown_default(action)):
            hidden_default.append(f"{where} (default {action.default!r}): {shown}")
    assert seen > 80  # every verb was walked, nested ones (data info, cnn train/predict) included
    assert silent == []
    assert hidden_default == []


def test_the_check_above_catches_a_silent_option():
    import argparse

    from featuremass.cli._options import Parser

    p = Parser(prog="x")
    p.add_argument("--quiet-one", type=int, default=3)
    p.add_argument("--said", type=int, default=4, help="a number")
    found = {a.option_strings[0]: a for _, a in _options(p)}
    assert not found["--quiet-one"].help
    shown = p._get_formatter()._get_help_string(found["--said"]) % {"default": 4}
    assert shown == "a number (default: 4)"
    assert isinstance(found["--said"], argparse.Action)


@pytest.mark.parametrize("verb", ["extract", "predict"])
def test_every_verb_measuring_images_defaults_to_scale_auto(verb):
    args = {"extract": ["extract", "--out", "x.parquet"], "predict": ["predict", "--model", "m",
                                                                      "--out", "x.csv"]}[verb]
    assert build_parser().parse_args(args).scale == "auto"


def test_one_vocabulary_across_verbs():
    """The same thing has the same option name in every verb that takes it."""
    parser = build_parser()
    names: dict[tuple, set] = {}
    for path, action in _options(parser):
        names.setdefault(path, set()).update(action.option_strings)
    feature_table_verbs = [("train",), ("evaluate",), ("predict",), ("importance",)]
    for verb in feature_table_verbs:
        assert "--features" in names[verb], verb
    for verb in [("extract",), ("predict",), ("cnn", "predict")]:
        assert {"--images", "--names", "--data", "--out"} <= names[verb], verb
    for verb in [("extract",), ("cnn", "predict")]:
        assert {"--npix", "--split"} <= names[verb], verb
    for verb, flags in names.items():
        if verb in ((), ("cutout",)):
            continue
        # no verb spells a shared thing its own way
        assert not flags & {"--train", "--val", "--feature-table", "--table", "--n-jobs",
                            "--workers", "--output", "-o", "--stack", "--ids"}, (verb, flags)


@pytest.mark.parametrize(("old", "new", "argv"), [
    ("--train", "features", ["train", "--train", "t.parquet", "--out", "m"]),
    ("--val", "val_features", ["train", "--features", "t.parquet", "--val", "v.parquet", "--out", "m"]),
    ("--train", "train_size", ["fetch", "--npix", "69", "--train", "all"]),
])
def test_old_spellings_still_work_with_one_deprecation_line(old, new, argv, capsys):
    args = build_parser().parse_args(argv)
    value = argv[argv.index(old) + 1]
    assert str(getattr(args, new)) == value
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and old in err[0] and "deprecated" in err[0]
    # hidden from --help, which shows the new name only
    out = _help(argv[:1], capsys)
    assert f"{old} " not in out and "--" + new.replace("_", "-") in out


def test_the_new_spelling_prints_no_deprecation(capsys):
    build_parser().parse_args(["train", "--features", "t.parquet", "--out", "m"])
    assert capsys.readouterr().err == ""


def test_a_failure_is_one_line_and_exit_status_1(monkeypatch, capsys, tmp_path):
    import featuremass.cli.report as report_cli

    def broken(run, out=None, benchmark=None):
        raise RuntimeError("the renderer broke")

    monkeypatch.setattr("featuremass.report.html.build_report", broken)
    assert main(["report", "--run", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "failed: RuntimeError: the renderer broke" in err and "Traceback" not in err
    assert report_cli.COMMANDS[0][0] == "report"
