from setuptools import find_packages, setup


def read_version():
    scope = {}
    with open('mmrev/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='mmrev',
    version=read_version(),
    description='Reversible Vision Transformers (RevViT, RevMViT) for '
    'mmpretrain and mmdet',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(include=['mmrev', 'mmrev.*']),
    include_package_data=True,
    install_requires=[
        'torch>=2.1',
        'torchvision>=0.16',
        'mmengine>=0.10,<1',
        'mmcv>=2.0,<2.2',
        'mmpretrain>=1.2,<2',
        'mmdet>=3.3,<4',
    ],
    extras_require={
        'tests': ['pytest>=7', 'ruff>=0.6', 'scikit-learn>=1.3',
                  'pycocotools>=2.0'],
    },
)
