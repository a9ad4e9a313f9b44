"""The scripts' command line: one ``error:`` line and exit 2 for config-file and flag problems,
``--help`` exit 0, ``--print_config``, and no workdir left behind by a failed start."""

import os

import pytest

from sce_jax.launch import command_line
from sce_jax.launch.config_files import load_config_module
from sce_jax.runs import config_doc
from tests import ROOT, warm_start

EXPLAIN = os.path.join(ROOT, "scripts", "explain.py")
EVALUATE = os.path.join(ROOT, "scripts", "evaluate.py")


def _run(script, *args, cwd=None):
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    return warm_start.run_script(script, list(args), env, cwd=cwd or ROOT)


def _one_error_line(proc, pattern):
    import re
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert re.search(pattern, errors[0]), errors[0]


@pytest.fixture
def broken_configs(tmp_path):
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def get_config(arg=None):\n    c = dict(\n    return c\n")
    imports = tmp_path / "imports.py"
    imports.write_text("import os\nimport not_a_module_of_this_project\n")
    return syntax, imports


def test_config_file_errors_are_one_line_exit_2(tmp_path, broken_configs):
    syntax, imports = broken_configs
    cases = [
        (["--config=configs/nope.py"],
         r"config file 'configs/nope.py' does not exist; give a path or the name of a shipped "
         r"config \(ablation, fashion_mnist, flux, sd3, squares\)"),
        (["--config=configs/fashion_mnist.py:tinyy"],
         r"fashion_mnist.py with argument 'tinyy': unknown config argument 'tinyy'; use nothing, "
         r"'tiny' or 'validation' \(line \d+\)"),
        ([f"--config={syntax}"], rf"config file {syntax} line 2: '\(' was never closed"),
        ([f"--config={imports}"], rf"config file {imports} fails to load at line 2: "
                                  r"ModuleNotFoundError: No module named 'not_a_module_of_this_project'"),
        (["--config.targets.class_index=Dress"],
         r"class_index=Dress: .*; to give the class by name use --config.targets.class_name=NAME"),
    ]
    for args, pattern in cases:
        _one_error_line(_run(EXPLAIN, *args, f"--workdir={tmp_path / 'w'}"), pattern)
    assert not (tmp_path / "w").exists()


def test_unknown_class_name_lists_the_names_and_leaves_no_workdir(tmp_path):
    workdir = tmp_path / "new" / "run"
    proc = _run(EXPLAIN, "--config=fashion_mnist:tiny", "--config.targets.kind=class",
                "--config.targets.class_name=Dresss", f"--workdir={workdir}")
    _one_error_line(proc, r"targets.class_name 'Dresss' is not a class name; the classes are: "
                          r"T-shirt/top \(0\), Trouser \(1\), .*Ankle boot \(9\)")
    assert not (tmp_path / "new").exists()


def test_a_bad_data_source_leaves_no_workdir(tmp_path):
    workdir = tmp_path / "run"
    proc = _run(EXPLAIN, "--config=fashion_mnist:tiny", f"--config.data.source={tmp_path / 'x.npz'}",
                f"--workdir={workdir}")
    _one_error_line(proc, r"x.npz")
    assert "loading the models and the data ..." in proc.stderr  # said before the slow part
    assert not workdir.exists()


@pytest.mark.parametrize("script", ["explain", "evaluate", "merge", "run_ablation", "convert_weights"])
def test_help_exits_0(script):
    proc = _run(os.path.join(ROOT, "scripts", f"{script}.py"), "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--" in proc.stdout


def test_explain_help_mentions_print_config_and_config_by_name():
    out = _run(EXPLAIN, "--help").stdout
    assert "--print_config" in out and "squares:tiny" in out


def test_evaluate_errors(tmp_path):
    _one_error_line(_run(EVALUATE), r"--workdirs is required: .* e.g. --workdirs=runs/fashion_mnist")
    _one_error_line(_run(EVALUATE, "--no_such_flag"), r"Unknown command line flag 'no_such_flag'")
    proc = _run(EVALUATE, f"--workdirs={tmp_path / 'none'}")  # one problem line per workdir
    assert proc.returncode == 2 and "error: cannot evaluate:" in proc.stderr
    assert "none: no such folder" in proc.stderr and "Traceback" not in proc.stderr


def test_print_config_shows_overrides_and_comments_by_shipped_name(tmp_path):
    proc = _run(EXPLAIN, "--config=squares:tiny", "--config.search.steps=7", "--print_config",
                f"--workdir={tmp_path / 'w'}", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    steps = [line for line in lines if line.startswith("--config.search.steps=")]
    assert steps and steps[0].startswith("--config.search.steps=7 ") and "# step budget per attempt" in steps[0]
    assert any(line.startswith("--config.targets.class_name=") and "by name" in line for line in lines)
    assert any(line.startswith("--config.data.image_size=(64,64)") for line in lines)
    assert not (tmp_path / "w").exists()


def test_config_given_twice_is_one_error_line(tmp_path, capsys):
    # the overrides between them made absl fail with "defined twice"; without any, the last
    # file won silently
    proc = _run(EXPLAIN, "--config=fashion_mnist:tiny", "--config.search.steps=3",
                "--config", "squares:tiny", f"--workdir={tmp_path / 'w'}")
    _one_error_line(proc, r"^error: --config was given twice \(fashion_mnist:tiny, squares:tiny\); "
                          r"give it once$")
    assert not (tmp_path / "w").exists()
    assert command_line.config_values(
        ["x", "--config", "a", "-config=b", "--config.search.steps=3", "--configs=c", "--",
         "--config=d"]) == ["a", "b"]
    with pytest.raises(SystemExit) as stopped:
        command_line.resolve_config_argv(["x", "--config=squares", "--config=squares", "-config=x"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == ("error: --config was given 3 times (squares, squares, x); "
                                       "give it once\n")
    assert command_line.resolve_config_argv(["x", "--config=squares", "--help"])[1] == "--config=squares"


def test_tiny_shrinks_every_shipped_demo(tmp_path):
    """``:tiny`` is a seconds-long check whatever the demo tunes: 4 images, 5 steps, 2 samples."""
    proc = _run(EXPLAIN, "--config=squares:tiny", "--print_config", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines if line.startswith("--config.search.steps=")] == [
        "--config.search.steps=5"]
    ablation = load_config_module(os.path.join(ROOT, "configs", "ablation.py"))
    configs = {f"{demo}:tiny": load_config_module(os.path.join(ROOT, "configs", f"{demo}.py"))
               .get_config("tiny") for demo in ("fashion_mnist", "squares")}
    configs.update({f"ablation:{v},{demo}tiny": ablation.get_config(f"{v},{demo}tiny")
                    for v in ablation.VARIANTS for demo in ("", "squares,")})
    for name, config in configs.items():
        assert (config.search.steps, config.search.smoothing.num_samples, config.data.limit) == (
            5, 2, 4), name
    full = load_config_module(os.path.join(ROOT, "configs", "squares.py")).get_config()
    assert full.search.steps == 150 and configs["squares:tiny"].search.sparsify == full.search.sparsify


def test_config_by_name_path_and_argument():
    assert command_line.find_config_file("squares") == command_line.find_config_file("configs/squares.py")
    assert command_line.check_config("squares:tiny").endswith(os.path.join("configs", "squares.py") + ":tiny")
    assert command_line.resolve_config_argv(["x", "--config", "squares"])[2].endswith("squares.py")
    with pytest.raises(command_line.CommandLineError, match="does not exist"):
        command_line.find_config_file("nope")


def test_every_run_config_key_has_a_comment():
    config = load_config_module(os.path.join(ROOT, "configs", "fashion_mnist.py")).get_config()
    comments = config_doc.run_config_comments()
    undocumented = [k for k in config_doc.flatten(config)
                    if not k.startswith("search.") and k not in comments]
    assert undocumented == []
    assert comments["search.smoothing.sigma"].startswith("(smoothed gradient")
    assert "(False: K independent attempts" in comments["search.lock"]
    assert "search.seed" not in comments or "edit mask" not in comments["search.seed"]


def test_installed_layout_is_what_the_entry_points_use():
    """The build maps configs/ and scripts/ into the package where console.py and
    command_line.py look for them; in a checkout they find the top-level folders."""
    import tomllib

    from sce_jax.launch import console

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    assert project["project"]["license"] == "Apache-2.0"
    scripts = project["project"]["scripts"]
    assert scripts == {"sce-jax-explain": "sce_jax.launch.console:explain",
                       "sce-jax-evaluate": "sce_jax.launch.console:evaluate",
                       "sce-jax-merge": "sce_jax.launch.console:merge"}
    shipped = project["tool"]["setuptools"]["package-data"]["sce_jax._scripts"]
    assert all(os.path.exists(os.path.join(ROOT, "scripts", name)) for name in shipped)
    assert {script.split(":")[1] + ".py" for script in scripts.values()} <= set(shipped)
    package_dir = project["tool"]["setuptools"]["package-dir"]
    assert package_dir == {"sce_jax._configs": "configs", "sce_jax._scripts": "scripts"}
    assert command_line.CONFIG_DIRS[0].endswith(os.path.join("sce_jax", "_configs"))
    assert console.SCRIPT_DIRS[0].endswith(os.path.join("sce_jax", "_scripts"))
    assert console.script_path("explain") == EXPLAIN
    assert console.script_path("evaluate") == EVALUATE
    assert console.script_path("merge") == os.path.join(ROOT, "scripts", "merge.py")
    with open(os.path.join(ROOT, "setup.py")) as f:
        assert '"sce_jax._configs", "sce_jax._scripts"' in f.read()
