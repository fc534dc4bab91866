import os
import shutil
import sys

from setuptools import find_packages, setup

MIM_FILES = ('model-index.yml', 'configs')  # read by mmrev.model_index


def add_mim_extension():
    """Copy model-index.yml and configs/ into mmrev/.mim, as OpenMMLab packages do, so
    that an installed (non-editable) mmrev finds them; a source checkout or an editable
    install reads them in place."""
    if {'develop', 'editable_wheel'} & set(sys.argv) or not os.path.isdir('configs'):
        return  # editable, or built from an sdist that holds mmrev/.mim already
    mim_dir = os.path.join('mmrev', '.mim')
    shutil.rmtree(mim_dir, ignore_errors=True)
    os.makedirs(mim_dir)
    for name in MIM_FILES:
        if os.path.isdir(name):
            shutil.copytree(name, os.path.join(mim_dir, name))
        else:
            shutil.copy(name, mim_dir)


def mim_package_data():
    mim_dir = os.path.join('mmrev', '.mim')
    return [os.path.relpath(os.path.join(folder, name), 'mmrev')
            for folder, _, names in os.walk(mim_dir) for name in names]


def read_version():
    scope = {}
    with open('mmrev/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


add_mim_extension()
setup(
    name='mmrev',
    version=read_version(),
    description='Reversible Vision Transformers (RevViT, RevMViT) for '
    'mmpretrain, mmdet and mmaction2',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(include=['mmrev', 'mmrev.*']),
    include_package_data=True,
    package_data={'mmrev': mim_package_data()},
    install_requires=[
        'torch>=2.5',  # also in mmrev/__init__.py (MIN_TORCH)
        'torchvision>=0.20',
        'mmengine>=0.10,<1',
        'mmcv>=2.0,<2.2',
        'mmpretrain>=1.2,<2',
        'mmdet>=3.3,<4',
    ],
    extras_require={
        'tests': ['pytest>=7', 'ruff>=0.6', 'scikit-learn>=1.3',
                  'pycocotools>=2.0', 'onnx', 'onnxscript', 'onnxruntime'],
        # mmaction2 1.2.0 itself is installed with --no-deps (tools/setup_env.sh): it
        # requires opencv-contrib-python, which clashes with mmcv's opencv-python
        'video': ['einops', 'importlib-metadata', 'decord>=0.6'],
    },
)
