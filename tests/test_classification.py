"""Classification in mmpretrain: configs, model index, inference API, train/test tools."""
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import DefaultScope, init_default_scope
from mmpretrain import get_model, inference_model, list_models
from mmpretrain.apis import ModelHub
from mmpretrain.registry import MODELS
from PIL import Image

import mmrev  # noqa: F401  registers mmrev's models
from mmrev.converters import convert_slowfast_file, spec_from_slowfast_cfg
from mmrev.model_index import model_index_root, register_models

from conftest import SLOWFAST_FIXTURES

ROOT = Path(__file__).parents[1]
FIXTURES = SLOWFAST_FIXTURES
CONFIGS = sorted(str(p.relative_to(ROOT)) for folder in ('revvit', 'revmvit')
                 for p in (ROOT / 'configs' / folder).glob('*.py'))
DIGITS_CONFIG = ROOT / 'configs' / 'revmvit' / 'revmvit-tiny_1xb64_digits.py'
MMREV_MODELS = {  # full name: alias
    'revvit-small_slowfast_in1k': 'revvit-small',
    'revvit-base_slowfast_in1k': 'revvit-base',
    'revmvit-base_slowfast_in1k': 'revmvit-base',
}


def run_tool(*args, cwd=ROOT, timeout=600) -> str:
    """Run ``python tools/...`` in a subprocess; its output, or a failure showing it."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-5000:]
    return proc.stdout


def build_classifier(cfg: Config):
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return MODELS.build(dict(cfg.model, data_preprocessor=cfg.data_preprocessor))


def image_sizes(cfg: Config) -> tuple:
    """The side of the images the test pipeline makes, and the shape of an image it
    takes: any size for a pipeline that crops, else already the model's size."""
    crops = [t['crop_size'] for t in cfg.test_dataloader.dataset.pipeline
             if t['type'] == 'CenterCrop']
    if crops:
        return crops[0], (300, 260, 3)
    size = cfg.model.backbone.img_size
    return size, (size, size, 3)


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds_model_and_pipelines(config):
    cfg = Config.fromfile(ROOT / config)
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.custom_imports == dict(imports=['mmrev'], allow_failed_imports=False)
    model = build_classifier(cfg).eval()
    assert model.backbone.__class__.__module__.startswith('mmrev.')

    size, source_shape = image_sizes(cfg)
    with torch.no_grad():  # the head takes what the backbone gives
        logits = model(torch.zeros(1, 3, size, size), mode='tensor')
    assert logits.shape == (1, cfg.model.head.num_classes)

    # both pipelines run on an image (minus the file loading) and give the model's size
    init_default_scope(cfg.default_scope)
    image = np.random.default_rng(0).integers(0, 256, source_shape, dtype=np.uint8)
    for loader in ('train_dataloader', 'test_dataloader'):
        pipeline = Compose(cfg[loader].dataset.pipeline[1:])
        packed = pipeline(dict(img=image.copy(), img_shape=image.shape[:2],
                               ori_shape=image.shape[:2], gt_label=3))
        assert packed['inputs'].shape == (3, size, size), loader


def test_imagenet_recipes_follow_slowfast():
    """The settings that differ between the official recipes (REV_*.yaml)."""
    expected = {  # drop path, weight decay, clip, RandAugment (magnitude, num ops)
        'configs/revvit/revvit-small_8xb256_in1k.py': (0.1, 0.05, 1.0, 7, 2),
        'configs/revvit/revvit-base_8xb256_in1k.py': (0.2, 0.1, 2.0, 6, 5),
        'configs/revmvit/revmvit-base_8xb256_in1k.py': (0.1, 0.05, 1.0, 9, 6),
    }
    for config, (drop_path, decay, clip, magnitude, num_ops) in expected.items():
        cfg = Config.fromfile(ROOT / config)
        rand_augment, = [t for t in cfg.train_dataloader.dataset.pipeline
                         if t['type'] == 'RandAugment']
        assert (cfg.model.backbone.drop_path_rate, cfg.optim_wrapper.optimizer.weight_decay,
                cfg.optim_wrapper.clip_grad.max_norm, rand_augment['magnitude_level'],
                rand_augment['num_policies']) == (drop_path, decay, clip, magnitude, num_ops)
        # 5e-4 per 512 images, for 8 GPUs x 256
        batch = 8 * cfg.train_dataloader.batch_size
        assert cfg.optim_wrapper.optimizer.lr == pytest.approx(5e-4 * batch / 512)
        assert cfg.auto_scale_lr.base_batch_size == batch
        assert cfg.train_cfg.max_epochs == 300
        test_steps = [t['type'] for t in cfg.test_dataloader.dataset.pipeline]
        assert test_steps == ['LoadImageFromFile', 'ResizeEdge', 'CenterCrop', 'PackInputs']


# ---------------------------------------------------------------- model index


def test_model_index_registers_names_and_aliases():
    names = list_models('*rev*')
    for name, alias in MMREV_MODELS.items():
        assert name in names and alias in names
        assert ModelHub.get(alias).name == name
        metainfo = ModelHub.get(name)
        assert metainfo.weights.startswith('https://dl.fbaipublicfiles.com/pyslowfast/rev/')
        assert Path(metainfo.config.filename).is_file()
    # mmpretrain's own RevViT entries stay what they were
    assert 'revvit-small_3rdparty_in1k' in names
    assert ModelHub.get('revvit-small_3rdparty_in1k').weights.startswith(
        'https://download.openmmlab.com/')
    # registering again (e.g. a reload) changes nothing
    assert sorted(register_models()) == sorted([*MMREV_MODELS, *MMREV_MODELS.values()])
    assert list_models('*rev*') == names
    assert (model_index_root() / 'model-index.yml').is_file()


def test_installed_wheel_finds_model_index(tmp_path):
    """A wheel carries model-index.yml and the configs (mmrev/.mim), and an installed
    mmrev registers its models from there."""
    source = tmp_path / 'src'
    ignore = shutil.ignore_patterns('__pycache__', '.mim', '*.egg-info')
    for name in ('mmrev', 'configs'):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ('setup.py', 'README.md', 'model-index.yml'):
        shutil.copy(ROOT / name, source)
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
                    '--no-build-isolation', '-w', str(tmp_path), str(source)], check=True)
    wheel, = tmp_path.glob('mmrev-*.whl')
    zipfile.ZipFile(wheel).extractall(tmp_path / 'site')
    check = ("import mmrev; from mmpretrain import get_model; "
             "model = get_model('revmvit-base'); print(model._config.filename)")
    out = subprocess.run([sys.executable, '-c', check], cwd=tmp_path, text=True,
                         env=dict(os.environ, PYTHONPATH=str(tmp_path / 'site')),
                         capture_output=True, check=True).stdout
    config = tmp_path / 'site' / 'mmrev' / '.mim' / 'configs' / 'revmvit'
    assert out.splitlines()[-1] == str(config / 'revmvit-base_8xb256_in1k.py')


def test_model_index_metrics():
    top1 = {name: ModelHub.get(name).results[0].metrics['Top 1 Accuracy']
            for name in MMREV_MODELS}
    assert top1 == {'revvit-small_slowfast_in1k': 79.9, 'revvit-base_slowfast_in1k': 81.8,
                    'revmvit-base_slowfast_in1k': 82.9}


@pytest.mark.parametrize('name', list(MMREV_MODELS))
def test_get_model_parameter_count_matches_metafile(name):
    model = get_model(name)
    assert type(model.backbone).__module__.startswith('mmrev.')
    assert sum(p.numel() for p in model.parameters()) == \
        ModelHub.get(name).metadata.parameters


def reference_scores(model, image_path: str) -> torch.Tensor:
    """SlowFast's evaluation transform done by hand with PIL: short side to 256
    (bicubic), centre crop 224, ImageNet normalisation; then backbone, head, softmax."""
    image = Image.open(image_path).convert('RGB')
    w, h = image.size
    scale = 256 / min(w, h)
    image = image.resize((round(w * scale), round(h * scale)), Image.BICUBIC)
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    image = image.crop((left, top, left + 224, top + 224))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    x = (x - torch.tensor([123.675, 116.28, 103.53])[:, None, None]) / \
        torch.tensor([58.395, 57.12, 57.375])[:, None, None]
    with torch.no_grad():
        return model.head(model.backbone(x)).softmax(dim=1)[0]


def test_get_model_and_inference_model_with_local_checkpoint(tmp_path):
    source = get_model('revvit-small')
    torch.manual_seed(1)  # weights unlike any fresh initialisation
    with torch.no_grad():
        for param in source.parameters():
            param.normal_(0, 0.05)
    checkpoint = tmp_path / 'revvit-small.pth'
    torch.save(dict(state_dict=source.state_dict(), meta=dict()), checkpoint)

    for name in ('revvit-small_slowfast_in1k', 'revvit-small'):
        model = get_model(name, pretrained=str(checkpoint))
        for key, value in source.state_dict().items():
            torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)

    image = tmp_path / 'image.png'
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(image)
    expected = reference_scores(model, str(image))
    result = inference_model('revvit-small', str(image), pretrained=str(checkpoint))
    assert result['pred_label'] == int(expected.argmax())
    assert result['pred_score'] == pytest.approx(float(expected.max()), abs=1e-5)
    np.testing.assert_allclose(result['pred_scores'], expected.numpy(), atol=1e-5)


@pytest.mark.parametrize('fixture,name', [('revvit_tiny', 'revvit-small'),
                                          ('revmvit_tiny', 'revmvit-base_slowfast_in1k')])
def test_get_model_converts_slowfast_checkpoint_when_loading(fixture, name):
    """``pretrained=`` a SlowFast .pyth (as the metafile weights are): the named model,
    given the fixture's architecture, reproduces SlowFast's logits."""
    pyth = FIXTURES / f'{fixture}.pyth'
    spec = spec_from_slowfast_cfg(torch.load(pyth, weights_only=True)['cfg'])
    model = get_model(name, pretrained=str(pyth), backbone=dict(spec.backbone, _delete_=True),
                      head=dict(num_classes=spec.num_classes, in_channels=spec.head_channels))
    io = torch.load(FIXTURES / f'{fixture}_io.pt', weights_only=True)
    with torch.no_grad():
        logits = model(io['input'], mode='tensor')
    torch.testing.assert_close(logits, io['logits'], rtol=0, atol=1e-5)


# ---------------------------------------------------------------- tools/test.py


@pytest.mark.parametrize('fixture,as_shipped', [('revvit_tiny', False),
                                                ('revmvit_tiny', True)])
def test_test_tool_reproduces_slowfast_predictions(fixture, as_shipped, tmp_path):
    """tools/test.py on a converted SlowFast checkpoint predicts SlowFast's scores
    for the fixture's input images; ``as_shipped``: on the SlowFast checkpoint itself
    too (converted as it is loaded, the same path for every architecture)."""
    converted = convert_slowfast_file(FIXTURES / f'{fixture}.pyth', tmp_path / 'model.pth')
    io = torch.load(FIXTURES / f'{fixture}_io.pt', weights_only=True)
    labels = io['logits'].argmax(dim=1).tolist()
    samples = [dict(img=image.permute(1, 2, 0).numpy(), img_path=f'sample{i}.png',
                    gt_label=label)
               for i, (image, label) in enumerate(zip(io['input'], labels))]
    with open(tmp_path / 'samples.pkl', 'wb') as f:
        pickle.dump(dict(metainfo=dict(classes=[str(c) for c in range(10)]),
                         data_list=samples), f)
    # the fixture inputs are already normalised: no normalisation, no colour swap
    (tmp_path / 'test_config.py').write_text(f"""
_base_ = [{str(converted.config)!r}]
data_preprocessor = dict(mean=None, std=None, to_rgb=False)
test_dataloader = dict(
    batch_size=2, num_workers=0,
    dataset=dict(_delete_=True, type='BaseDataset', ann_file={str(tmp_path / 'samples.pkl')!r},
                 pipeline=[dict(type='PackInputs')]))
test_evaluator = dict(topk=(1, ))
""")
    run_tool(ROOT / 'tools' / 'test.py', tmp_path / 'test_config.py', converted.checkpoint,
             '--work-dir', tmp_path / 'work', '--out', tmp_path / 'preds.pkl')
    with open(tmp_path / 'preds.pkl', 'rb') as f:
        predictions = pickle.load(f)
    scores = torch.stack([p['pred_score'] for p in predictions])
    torch.testing.assert_close(scores, io['output'], rtol=0, atol=1e-5)
    assert [int(p['pred_label']) for p in predictions] == labels

    if not as_shipped:
        return
    run_tool(ROOT / 'tools' / 'test.py', tmp_path / 'test_config.py', FIXTURES / f'{fixture}.pyth',
             '--work-dir', tmp_path / 'work', '--out', tmp_path / 'metrics.json',
             '--out-item', 'metrics')
    assert json.loads((tmp_path / 'metrics.json').read_text()) == {'accuracy/top1': 100.0}


# ---------------------------------------------------------------- digits, tools/train.py


@pytest.fixture(scope='module')
def digits_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('data') / 'digits'
    out = run_tool(ROOT / 'tools' / 'dataset_converters' / 'prepare_digits.py',
                   '--out', root)
    assert '1437 train, 360 test' in out
    return root


def test_prepare_digits_layout_and_refusals(digits_root, tmp_path):
    for split, count in (('train', 1437), ('test', 360)):
        classes = sorted(p.name for p in (digits_root / split).iterdir())
        assert classes == [str(d) for d in range(10)]
        files = list((digits_root / split).glob('*/*.png'))
        assert len(files) == count
    image = Image.open(files[0])
    assert (image.size, image.mode) == ((32, 32), 'RGB')
    train = {p.name for p in (digits_root / 'train').glob('*/*.png')}
    assert not train & {p.name for p in files}  # disjoint splits

    tool = ROOT / 'tools' / 'dataset_converters' / 'prepare_digits.py'
    assert '1437 train' in run_tool(tool, '--out', digits_root)  # already there: kept
    foreign = tmp_path / 'mine'
    foreign.mkdir()
    (foreign / 'notes.txt').write_text('keep me')
    for args in (('--out', foreign), ('--out', digits_root, '--size', 64)):
        proc = subprocess.run([sys.executable, str(tool), *map(str, args)],
                              capture_output=True, text=True)
        assert proc.returncode == 1 and 'pass another --out' in proc.stderr
    assert [p.name for p in foreign.iterdir()] == ['notes.txt']


def last_accuracy(work_dir: Path) -> float:
    scalars, = work_dir.glob('*/vis_data/scalars.json')
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    return [r['accuracy/top1'] for r in records if 'accuracy/top1' in r][-1]


def test_train_tool_learns_digits(digits_root, tmp_path):
    """Two epochs of the Rev-MViT digits config (constant learning rate) go well above
    chance (10 %). (Resuming with tools/train.py --resume: test_reliability.py.)"""
    config = tmp_path / 'digits_short.py'
    config.write_text(f"""
_base_ = [{str(DIGITS_CONFIG)!r}]
data_root = {str(digits_root)!r}
train_dataloader = dict(num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
param_scheduler = [dict(type='ConstantLR', factor=1.0)]
train_cfg = dict(max_epochs=2, val_interval=1)
""")
    work_dir = tmp_path / 'work'
    out = run_tool(ROOT / 'tools' / 'train.py', config, '--work-dir', work_dir)
    assert 'Peak training memory' in out
    assert (work_dir / 'epoch_2.pth').is_file()
    assert last_accuracy(work_dir) > 60


def test_amp_on_cpu_reconstructs_as_in_fp32(digits_root, tmp_path):
    """``--amp`` on CPU (bf16 autocast) with the README's digits config: the fp32
    streams reconstruct to within bfloat16's precision, the gradients match ordinary
    backprop's to within it, and the hook's default tolerance under autocast does not
    warn."""
    config = ROOT / 'configs' / 'revvit' / 'revvit-tiny_1xb64_digits.py'
    out = run_tool(ROOT / 'tools' / 'train.py', config, '--amp', '--work-dir', tmp_path,
                   '--cfg-options', f'data_root={digits_root}',
                   f'train_dataloader.dataset.data_root={digits_root}',
                   f'val_dataloader.dataset.data_root={digits_root}',
                   'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
                   'train_cfg.max_epochs=1', 'train_cfg.val_interval=2',
                   'custom_hooks.0.interval=10', 'custom_hooks.0.check_grad=True',
                   'default_hooks.checkpoint.interval=2')
    assert 'BF16OptimWrapper' in out
    recon = [float(m) for m in re.findall(r'rev/recon_err: (\S+?),?\s', out)]
    grad = [float(m) for m in re.findall(r'rev/grad_err: (\S+?),?\s', out)]
    # a recomputed input one float32 ulp off can round to another bfloat16 in the
    # recompute: errors up to bfloat16's precision, not float32's (seen: 6e-8, 2.4e-4)
    bf16_eps = torch.finfo(torch.bfloat16).eps
    assert len(recon) == 2 and max(recon) < 4 * bf16_eps, recon
    assert len(grad) == 2 and max(grad) < bf16_eps, grad
    assert 'recomputes its inputs with relative error' not in out
