"""Every code snippet of README.md, as printed: Python programs run (in a folder holding
the files they name), configs build their models or hooks, the converter command runs, and
every other command names scripts and configs that exist."""
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import HOOKS, DefaultScope
from PIL import Image
from sklearn.datasets import load_sample_images

from mmrev.converters import convert_slowfast_file

from conftest import manifest_state_dict

ROOT = Path(__file__).parents[1]
SNIPPETS = re.findall(r'```(\w+)\n(.*?)```', (ROOT / 'README.md').read_text(), re.S)
PYTHON = [code for lang, code in SNIPPETS if lang == 'python']
CONFIGS = [code for code in PYTHON if re.match(r'(_base_|custom_hooks) = ', code)]
PROGRAMS = [code for code in PYTHON if code not in CONFIGS]
COMMANDS = [line for lang, code in SNIPPETS if lang == 'bash'
            for line in code.replace('\\\n', ' ').splitlines() if line.strip()]
CONVERTER = 'tools/model_converters/slowfast_to_mmrev.py'
# what the README's comments say a program computes
CHECKS = {
    'feats = vit(': 'assert feats.shape == (2, 768)\n'
                    'assert [m.shape[1] for m in maps] == [192, 384, 768, 1536]\n'
                    'assert [m.shape[-1] for m in maps] == [80, 40, 20, 10]\n',
    'list_models(': "assert 'revvit-small' in list_models('*rev*')\n"
                    'assert result["pred_scores"].shape == (1000, )\n',
    'class RevConvNet(': 'assert (grads[0] - grads[1]).abs().max() < 1e-5 * grads[1].abs().max()\n'
                         'assert isinstance(model.blocks[0].coupling, tuple)\n',
}


def first_line(code: str) -> str:
    return code.strip().splitlines()[0][:40]


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """The files the snippets name: official-size SlowFast checkpoints (random weights
    with the official keys and shapes), a converted one and an image."""
    folder = tmp_path_factory.mktemp('readme')
    torch.save(dict(model_state=manifest_state_dict('REV_VIT_S', seed=0)),
               folder / 'REV_VIT_S.pyth')
    torch.save(dict(model_state=manifest_state_dict('REV_MVIT_B_16_CONV', seed=0)),
               folder / 'REV_MVIT_B.pyth')
    convert_slowfast_file(folder / 'REV_MVIT_B.pyth', folder / 'revmvit-base.pth')
    Image.fromarray(load_sample_images().images[0]).save(folder / 'demo.jpg')
    return folder


def test_readme_has_the_snippets_this_test_knows():
    assert len(PROGRAMS) == 3 and len(CONFIGS) == 4
    assert all(any(key in code for code in PROGRAMS) for key in CHECKS)
    assert sum(CONVERTER in command for command in COMMANDS) == 1


@pytest.mark.parametrize('code', PROGRAMS, ids=first_line)
def test_program_runs(code, files):
    checks = ''.join(check for key, check in CHECKS.items() if key in code)
    result = subprocess.run([sys.executable, '-c', code + checks], cwd=files,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize('code', CONFIGS, ids=first_line)
def test_config_builds(code, tmp_path):
    path = tmp_path / 'snippet.py'
    path.write_text(code)
    cfg = Config.fromfile(path)
    if 'model' not in cfg:
        hooks = [HOOKS.build(hook) for hook in cfg.custom_hooks]
        assert [type(hook).__name__ for hook in hooks] == ['ReversibleBackpropHook']
        return
    registry = importlib.import_module(f'{cfg.default_scope}.registry')
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = registry.MODELS.build(cfg.model)
    assert type(model.backbone).__module__.startswith('mmrev.')


def test_converter_command_runs(files):
    (command, ) = [c for c in COMMANDS if CONVERTER in c]
    python, script, *args = shlex.split(command)
    assert python == '.venv/bin/python'
    subprocess.run([sys.executable, ROOT / script, *args], cwd=files, check=True)
    assert (files / args[1]).is_file()


@pytest.mark.parametrize('command', [c for c in COMMANDS if CONVERTER not in c])
def test_command_names_files_that_exist(command):
    """The jobs themselves are what CI and the README's figures run; here: every
    script and config they name is in the repository."""
    paths = [word for word in shlex.split(command, comments=True)
             if re.match(r'(tools|configs)/', word)]
    assert paths and all((ROOT / path).exists() for path in paths), paths
