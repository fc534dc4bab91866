"""SlowFast checkpoint conversion, checked against outputs of the official SlowFast code."""
import json
import os
import re
import runpy
import sys
from pathlib import Path

import pytest
import torch
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint
from mmpretrain import get_model
from mmpretrain.registry import MODELS

from mmrev.converters import (
    ModelSpec,
    SlowFastConversionError,
    classifier_config,
    config_text,
    convert_slowfast_file,
    convert_state_dict,
    detect_model_kind,
    head_channels,
    spec_from_slowfast_cfg,
    spec_from_state_dict,
)
from mmrev.models import RevMViT

from conftest import SLOWFAST_FIXTURES, manifest_state_dict

FIXTURES = SLOWFAST_FIXTURES
CLI = Path(__file__).parents[1] / 'tools' / 'model_converters' / 'slowfast_to_mmrev.py'
TINY_MODELS = ['revvit_tiny', 'revmvit_tiny']


def run_cli(*args) -> int:
    """Run the converter's command line in this process; its exit status."""
    argv = sys.argv
    sys.argv = [str(CLI), *map(str, args)]
    try:
        runpy.run_path(str(CLI), run_name='__main__')
    except SystemExit as e:
        return 0 if e.code is None else (e.code if isinstance(e.code, int) else 1)
    finally:
        sys.argv = argv
    return 0


def load_fixture(name: str) -> dict:
    return torch.load(FIXTURES / f'{name}.pyth', weights_only=True)


def save_checkpoint(checkpoint, path: Path) -> Path:
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize('name', TINY_MODELS)
def test_converted_fixture_reproduces_slowfast(name, tmp_path):
    dst = tmp_path / f'{name}.pth'
    result = convert_slowfast_file(FIXTURES / f'{name}.pyth', dst)
    assert result.config == str(tmp_path / f'{name}.py')
    expected = torch.load(FIXTURES / f'{name}_io.pt', weights_only=True)

    model = get_model(result.config, pretrained=str(dst))
    with torch.no_grad():
        features = model.extract_feat(expected['input'])
        assert torch.allclose(features[0], expected['features'], rtol=0, atol=1e-5)
        assert torch.allclose(model.head(features), expected['logits'], rtol=0, atol=1e-5)
        scores = torch.stack([s.pred_score for s in model.predict(expected['input'])])
        assert torch.allclose(scores, expected['output'], rtol=0, atol=1e-6)

        model.double()
        features = model.extract_feat(expected['input'].double())
        assert torch.allclose(features[0], expected['features_fp64'], rtol=0, atol=1e-10)
        assert torch.allclose(model.head(features), expected['logits_fp64'], rtol=0,
                              atol=1e-10)


@pytest.mark.parametrize('name', TINY_MODELS)
def test_cli_writes_what_the_api_writes(name, tmp_path):
    api = convert_slowfast_file(FIXTURES / f'{name}.pyth', tmp_path / 'api.pth')
    assert run_cli(FIXTURES / f'{name}.pyth', tmp_path / 'cli.pth') == 0
    from_api = torch.load(api.checkpoint, weights_only=True)
    from_cli = torch.load(tmp_path / 'cli.pth', weights_only=True)
    assert list(from_cli['state_dict']) == list(from_api['state_dict'])
    for key, value in from_api['state_dict'].items():
        assert torch.equal(from_cli['state_dict'][key], value)
    assert (tmp_path / 'cli.py').read_text() == Path(api.config).read_text()
    assert from_cli['meta']['model'] == from_api['meta']['model']


def slowfast_eval_transform(crop_size: int, mean, std):
    """SlowFast's ImageNet evaluation transform (torchvision, on PIL images)."""
    from torchvision import transforms as T
    return T.Compose([
        T.Resize(int(crop_size / 0.875), interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(crop_size), T.ToTensor(), T.Normalize(mean, std)])


def random_image(path: Path, height: int, width: int, seed: int = 0) -> str:
    from PIL import Image
    pixels = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(seed))
    Image.fromarray(pixels.numpy()).save(path)
    return str(path)


@pytest.mark.parametrize('crop_size', [32, 224])
def test_written_pipeline_preprocesses_as_slowfast_eval(crop_size, tmp_path):
    """Written test pipeline and data preprocessor vs SlowFast's evaluation transform."""
    from mmengine import Config
    from mmengine.dataset import Compose
    from mmpretrain.registry import TRANSFORMS
    from PIL import Image
    spec = ModelSpec(backbone=dict(type='mmrev.RevViT', arch='small'), num_classes=10,
                     head_channels=768, crop_size=crop_size)
    cfg = Config.fromstring(config_text(spec, 'test'), '.py')
    pipeline = Compose([TRANSFORMS.build(t) for t in cfg.test_pipeline])
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        preprocessor = MODELS.build(dict(type='ClsDataPreprocessor',
                                         **cfg.data_preprocessor))
    slowfast_eval = slowfast_eval_transform(crop_size, spec.mean, spec.std)
    for height, width in [(375, 500), (41, 77), (300, 299)]:
        path = random_image(tmp_path / f'{height}x{width}.png', height, width)
        data = pipeline(dict(img_path=path))
        ours = preprocessor(dict(inputs=[data['inputs']],
                                 data_samples=[data['data_samples']]))['inputs'][0]
        expected = slowfast_eval(Image.open(path).convert('RGB'))
        assert torch.allclose(ours, expected, rtol=0, atol=1e-5)


def test_inferencer_runs_a_converted_model_without_writing_a_config(tmp_path):
    from mmpretrain import ImageClassificationInferencer
    from PIL import Image
    result = convert_slowfast_file(FIXTURES / 'revmvit_tiny.pyth', tmp_path / 'revmvit.pth')
    path = random_image(tmp_path / 'image.png', 90, 70)
    inferencer = ImageClassificationInferencer(result.config, pretrained=result.checkpoint)
    scores = inferencer(path)[0]['pred_scores']

    spec = result.spec
    image = slowfast_eval_transform(spec.crop_size, spec.mean, spec.std)(
        Image.open(path).convert('RGB'))
    expected = inferencer.model.predict(image[None])[0].pred_score
    assert torch.allclose(torch.from_numpy(scores), expected, rtol=0, atol=1e-6)


def pretrained_classifier(config_path: str, checkpoint: str, on_backbone: bool):
    """The classifier of ``config_path``, initialised by ``init_cfg`` from
    ``checkpoint``: on the classifier, or on the backbone with ``prefix='backbone.'``
    (as an mmdet detector's backbone loads a classification checkpoint)."""
    from mmengine import Config
    cfg = Config.fromfile(config_path).model
    init_cfg = dict(type='Pretrained', checkpoint=checkpoint)
    if on_backbone:
        cfg.backbone.init_cfg = dict(init_cfg, prefix='backbone.')
    else:
        cfg.init_cfg = init_cfg
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg)
    model.init_weights()
    return model.eval()


@pytest.mark.parametrize('on_backbone', [False, True])
def test_converted_checkpoint_loads_through_init_cfg(on_backbone, tmp_path):
    result = convert_slowfast_file(FIXTURES / 'revvit_tiny.pyth', tmp_path / 'revvit.pth')
    model = pretrained_classifier(result.config, result.checkpoint, on_backbone)
    expected = torch.load(FIXTURES / 'revvit_tiny_io.pt', weights_only=True)
    with torch.no_grad():
        features = model.extract_feat(expected['input'])[0]
    assert torch.allclose(features, expected['features'], rtol=0, atol=1e-5)


def written_config(name: str, tmp_path: Path) -> str:
    """The mmpretrain config the converter writes for fixture ``name``."""
    path = tmp_path / f'{name}.py'
    path.write_text(config_text(spec_from_slowfast_cfg(load_fixture(name)['cfg']), name))
    return str(path)


@pytest.mark.parametrize('name', TINY_MODELS)
def test_slowfast_checkpoint_converts_on_the_fly(name, tmp_path):
    config, pyth = written_config(name, tmp_path), str(FIXTURES / f'{name}.pyth')
    expected = torch.load(FIXTURES / f'{name}_io.pt', weights_only=True)
    models = [get_model(config, pretrained=pyth),
              pretrained_classifier(config, pyth, on_backbone=False),
              pretrained_classifier(config, pyth, on_backbone=True)]
    for model in models:
        with torch.no_grad():
            features = model.extract_feat(expected['input'])[0]
        assert torch.allclose(features, expected['features'], rtol=0, atol=1e-5)


def test_slowfast_url_converts_on_the_fly(tmp_path, monkeypatch):
    """A model-zoo URL, as metafiles list them (the download is replaced by the local
    fixture)."""
    import mmrev.engine.checkpoint as engine_checkpoint
    monkeypatch.setattr(engine_checkpoint, 'download_checkpoint',
                        lambda url, *args, **kwargs: str(FIXTURES / 'revvit_tiny.pyth'))
    model = get_model(written_config('revvit_tiny', tmp_path))
    checkpoint = load_checkpoint(
        model, 'https://dl.fbaipublicfiles.com/pyslowfast/rev/REV_VIT_S.pyth', strict=True)
    assert checkpoint['meta']['converted_from'] == 'SlowFast'
    expected = torch.load(FIXTURES / 'revvit_tiny_io.pt', weights_only=True)
    with torch.no_grad():
        logits = model.head(model.extract_feat(expected['input']))
    assert torch.allclose(logits, expected['logits'], rtol=0, atol=1e-5)


@pytest.mark.parametrize('name, kind, arch', [
    ('REV_VIT_S', 'RevViT', 'small'),
    ('REV_VIT_B', 'RevViT', 'base'),
    ('REV_MVIT_B_16_CONV', 'RevMViT', 'base'),
])
def test_full_size_manifest_loads_strictly(name, kind, arch):
    state_dict = manifest_state_dict(name)
    assert detect_model_kind(state_dict) == kind
    spec = spec_from_state_dict(state_dict, kind)
    assert spec.backbone['arch'] == arch and spec.num_classes == 1000
    converted = convert_state_dict(state_dict)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(dict(
            type='ImageClassifier', backbone=dict(type=f'mmrev.{kind}', arch=arch),
            head=dict(type='LinearClsHead', num_classes=1000,
                      in_channels=spec.head_channels)))
    incompatible = model.load_state_dict(converted, strict=True)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    assert sum(v.numel() for v in converted.values()) == sum(
        p.numel() for p in model.parameters())


def slowfast_keys(state_dict: dict, transitions: list) -> dict:
    """An mmrev RevMViT classifier's state_dict under SlowFast's names: the mapping
    rules of the RevMViT docstring, stated independently of the converter."""
    first_layers = [0] + [t + 1 for t in transitions]
    renamed = {}
    for key, value in state_dict.items():
        layer = re.match(r'backbone\.stages\.(\d+)\.(transition|blocks\.(\d+))\.(.+)', key)
        if layer:
            stage, inner = int(layer.group(1)), layer.group(4)
            index = (transitions[stage - 1] if layer.group(2) == 'transition' else
                     first_layers[stage] + int(layer.group(3)))
            inner = re.sub('^f\\.', 'F.', re.sub('^g\\.', 'G.', inner))
            inner = inner.replace('pre_q_fuse.mlp.', 'pre_q_fuse.fuse_fn.')
            if re.search(r'pool_[qkv]\.weight$', inner):
                value = value.unsqueeze(2)
            key = f'rev_backbone.layers.{index}.{inner}'
        else:
            for mmrev_name, slowfast_name in [
                    (r'^backbone\.norm\d+\.', 'norm.'), (r'^backbone\.pos_embed', 'pos_embed'),
                    (r'^backbone\.patch_embed\.projection\.', 'patch_embed.proj.'),
                    (r'^head\.fc\.', 'head.projection.')]:
                key = re.sub(mmrev_name, slowfast_name, key)
        renamed[key] = value
    return renamed


@pytest.mark.parametrize('pre_q_fusion, res_path', [
    ('concat_linear_2', 'max'), ('concat', 'conv'), ('avg', 'conv'), ('max', 'max')])
def test_every_revmvit_fusion_and_residual_path_converts(pre_q_fusion, res_path):
    arch = dict(embed_dims=16, num_layers=5, num_heads=1, transition_layers=[1, 3],
                pre_q_fusion=pre_q_fusion, res_path=res_path, mlp_ratio=1.)
    backbone = dict(type='mmrev.RevMViT', arch=arch, img_size=32)
    spec = ModelSpec(backbone=backbone, num_classes=3, head_channels=head_channels(backbone))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(classifier_config(spec))
    expected = model.state_dict()
    slowfast = slowfast_keys(expected, [1, 3])
    converted = convert_state_dict(slowfast)
    assert set(converted) == set(expected)
    for key, value in converted.items():
        assert torch.equal(value, expected[key]), key
    if pre_q_fusion.startswith('concat'):
        inferred = spec_from_state_dict(slowfast, 'RevMViT').backbone['arch']
        base = RevMViT.arch_zoo['base']  # the residual path is not in the weights
        assert inferred == {**base, **arch, 'res_path': base['res_path']}
    else:  # a reduction: not stored in the weights
        with pytest.raises(SlowFastConversionError, match='pass the arch'):
            spec_from_state_dict(slowfast, 'RevMViT')


# ---------------------------------------------------------------- bad input
def revvit_checkpoint(**changes) -> dict:
    """The tiny RevViT fixture checkpoint with ``model_state`` entries replaced
    (None: removed)."""
    checkpoint = load_fixture('revvit_tiny')
    for key, value in changes.items():
        key = key.replace('__', '.')
        if value is None:
            del checkpoint['model_state'][key]
        else:
            checkpoint['model_state'][key] = value
    return checkpoint


def resnet_state_dict() -> dict:
    from torchvision.models import resnet18
    return resnet18().state_dict()


def mvit_state_dict() -> dict:
    """Keys of a plain (non-reversible) SlowFast MViTv2."""
    return {'patch_embed.proj.weight': torch.zeros(96, 3, 7, 7),
            'blocks.0.attn.qkv.weight': torch.zeros(288, 96),
            'blocks.0.attn.pool_q.weight': torch.zeros(96, 1, 3, 3, 3),
            'head.projection.weight': torch.zeros(400, 768)}


def edited_cfg_checkpoint(name: str, old: str, new: str) -> dict:
    checkpoint = load_fixture(name)
    assert old in checkpoint['cfg']
    checkpoint['cfg'] = checkpoint['cfg'].replace(old, new)
    return checkpoint


BAD_CHECKPOINTS = {
    'resnet': (resnet_state_dict, r'No rev_backbone\.layers\.\* keys.*conv1\.weight'),
    'plain_mvit': (mvit_state_dict, 'non-reversible MViT'),
    'mmpretrain_checkpoint': (lambda: {'state_dict': {}, 'meta': {}},
                              'OpenMMLab checkpoint'),
    'not_a_dict': (lambda: [torch.zeros(1)], 'Expected a checkpoint dict'),
    'missing_key': (lambda: revvit_checkpoint(rev_backbone__layers__3__G__mlp__fc2__bias=None),
                    r"missing keys 'backbone\.layers\.3\.g\.mlp\.fc2\.bias'"),
    'missing_k': (lambda: revvit_checkpoint(rev_backbone__layers__1__F__attn__k__weight=None),
                  r'Incomplete attention.*layers\.1\.f\.attn\.k\.weight'),
    'unexpected_key': (lambda: revvit_checkpoint(
        rev_backbone__layers__0__F__attn__rel_pos_h=torch.zeros(3, 8)),
        r"Unexpected keys.*'rev_backbone\.layers\.0\.F\.attn\.rel_pos_h'"),
    'extra_layer': (lambda: revvit_checkpoint(
        rev_backbone__layers__4__G__norm__weight=torch.ones(64)),
        r"unexpected keys 'backbone\.layers\.4\.g\.norm\.weight'"),
    'shape_mismatch': (lambda: revvit_checkpoint(
        rev_backbone__layers__2__G__mlp__fc1__weight=torch.zeros(128, 64)),
        r'shape mismatches .*layers\.2\.g\.mlp\.fc1\.weight \(128, 64\) '
        r'\(model: \(256, 64\)\)'),
    'qkv_shape_mismatch': (lambda: revvit_checkpoint(
        rev_backbone__layers__0__F__attn__v__weight=torch.zeros(32, 64)),
        'q, k, v of .*layers.0.f.attn.qkv.weight have shapes'),
    'class_token': (lambda: dict(edited_cfg_checkpoint(
        'revvit_tiny', 'CLS_EMBED_ON: false', 'CLS_EMBED_ON: true'), model_state=dict(
            load_fixture('revvit_tiny')['model_state'], cls_token=torch.zeros(1, 1, 32))),
        r'MVIT\.CLS_EMBED_ON = True with a class token in the weights'),
    'unsupported_mvit_cfg': (lambda: edited_cfg_checkpoint(
        'revmvit_tiny', 'POOL_FIRST: false', 'POOL_FIRST: true'),
        r'MVIT\.POOL_FIRST = True is not supported'),
    'dim_change_off_transition': (lambda: edited_cfg_checkpoint(
        'revmvit_tiny', 'DIM_MUL:\n  - - 1', 'DIM_MUL:\n  - - 2'),
        r'MVIT\.DIM_MUL = .* changes layers other than the stage transitions'),
    'non_reversible_cfg': (lambda: edited_cfg_checkpoint(
        'revmvit_tiny', '    ENABLE: true\n    PRE_Q', '    ENABLE: false\n    PRE_Q'),
        'without MVIT.REV.ENABLE'),
}


def assert_cli_fails(tmp_path, src, dst, message, capsys, *args):
    """The CLI exits non-zero, says ``message``, and leaves ``tmp_path`` unchanged."""
    before = {p: p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()}
    assert run_cli(src, dst, *args) != 0
    assert message in capsys.readouterr().err
    after = {p: p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()}
    assert after == before


@pytest.mark.parametrize('case', sorted(BAD_CHECKPOINTS))
def test_bad_checkpoint_is_refused(case, tmp_path, capsys):
    make, message = BAD_CHECKPOINTS[case]
    src = save_checkpoint(make(), tmp_path / 'src.pyth')
    with pytest.raises(SlowFastConversionError, match=message):
        convert_slowfast_file(src, tmp_path / 'dst.pth')
    assert sorted(os.listdir(tmp_path)) == ['src.pyth']
    assert_cli_fails(tmp_path, src, tmp_path / 'dst.pth', 'error: ', capsys)


def test_missing_file_and_non_checkpoint_are_refused(tmp_path, capsys):
    assert_cli_fails(tmp_path, tmp_path / 'nothing.pyth', tmp_path / 'dst.pth',
                     'No such file', capsys)
    text = tmp_path / 'notes.pyth'
    text.write_text('not a checkpoint\n')
    assert_cli_fails(tmp_path, text, tmp_path / 'dst.pth',
                     'is not a PyTorch checkpoint', capsys)
    assert_cli_fails(tmp_path, tmp_path, tmp_path / 'dst.pth', 'is a directory', capsys)


def test_existing_destination_needs_force(tmp_path, capsys):
    src = FIXTURES / 'revvit_tiny.pyth'
    dst = tmp_path / 'revvit.pth'
    dst.write_bytes(b'precious')
    assert_cli_fails(tmp_path, src, dst, 'already exists: pass --force', capsys)
    assert run_cli(src, dst, '--force') == 0
    assert 'state_dict' in torch.load(dst, weights_only=True)

    config = tmp_path / 'other.py'
    config.write_text('# precious config\n')
    assert_cli_fails(tmp_path, src, tmp_path / 'other.pth', 'other.py already exists',
                     capsys)
    assert_cli_fails(tmp_path, dst, dst, 'is the source checkpoint', capsys, '--force')


def test_unwritable_destination_is_refused(tmp_path, capsys):
    src = FIXTURES / 'revvit_tiny.pyth'
    (tmp_path / 'file').write_text('')
    assert_cli_fails(tmp_path, src, tmp_path / 'file' / 'revvit.pth', 'file is a file',
                     capsys)
    assert_cli_fails(tmp_path, src, tmp_path / 'revvit.py', 'ends in .py', capsys)


def test_destination_folders_are_created(tmp_path):
    dst = tmp_path / 'checkpoints' / 'slowfast' / 'revvit.pth'
    convert_slowfast_file(FIXTURES / 'revvit_tiny.pyth', dst)
    assert dst.is_file() and dst.with_suffix('.py').is_file()


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    dst = tmp_path / 'revvit.pth'
    dst.write_bytes(b'precious')

    def fail_half_way(obj, f):
        f.write(b'partial')
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(torch, 'save', fail_half_way)
    with pytest.raises(SlowFastConversionError, match='No space left'):
        convert_slowfast_file(FIXTURES / 'revvit_tiny.pyth', dst, force=True)
    assert sorted(os.listdir(tmp_path)) == ['revvit.pth']
    assert dst.read_bytes() == b'precious'


def test_revmvit_architecture_without_cfg_is_inferred(tmp_path):
    checkpoint = load_fixture('revmvit_tiny')
    from_cfg = spec_from_slowfast_cfg(checkpoint['cfg'])
    from_weights = spec_from_state_dict(checkpoint['model_state'], 'RevMViT')
    assert from_weights.backbone['arch'] == from_cfg.backbone['arch']
    assert from_weights.head_channels == from_cfg.head_channels == 256

    src = save_checkpoint(checkpoint['model_state'], tmp_path / 'bare.pyth')
    result = convert_slowfast_file(src, tmp_path / 'bare.pth')
    assert result.config is None and result.spec.kind == 'RevMViT'


def test_architecture_without_cfg_is_inferred_or_given(tmp_path, capsys):
    checkpoint = load_fixture('revvit_tiny')
    src = save_checkpoint(checkpoint['model_state'], tmp_path / 'bare.pyth')
    # 64 channels, 4 layers: no named arch; the number of heads is not in the weights
    with pytest.raises(SlowFastConversionError, match='pass the arch'):
        convert_slowfast_file(src, tmp_path / 'bare.pth')
    arch = dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=256)
    assert run_cli(src, tmp_path / 'bare.pth', '--arch', json.dumps(arch)) == 0
    assert not (tmp_path / 'bare.py').exists()  # no SlowFast cfg, no config written
    converted = torch.load(tmp_path / 'bare.pth', weights_only=True)
    spec = spec_from_state_dict(checkpoint['model_state'], 'RevViT', arch)
    assert spec.backbone['img_size'] == 32 and spec.backbone['arch']['patch_size'] == 8
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(classifier_config(spec))
    model.load_state_dict(converted['state_dict'], strict=True)

    assert_cli_fails(tmp_path, src, tmp_path / 'other.pth', 'Unknown RevViT arch', capsys,
                     '--arch', 'tiny')
