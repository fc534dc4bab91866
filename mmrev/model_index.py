"""mmrev's models in mmpretrain's model hub.

``register_models()`` (run by ``import mmrev``) adds every model of mmrev's
``model-index.yml`` to :class:`mmpretrain.apis.ModelHub`, under its full name
(``revvit-small_slowfast_in1k``) and under its ``Alias`` (``revvit-small``), so that
``list_models``, ``get_model`` and ``inference_model`` know them.
"""
from pathlib import Path
from typing import List, Optional

from mmpretrain.apis import ModelHub

INDEX_FILE = 'model-index.yml'


def model_index_root() -> Path:
    """The folder of ``model-index.yml`` and ``configs/``: the repository root for a
    source checkout (editable install), ``mmrev/.mim`` for an installed wheel."""
    package = Path(__file__).resolve().parent
    for root in (package.parent, package / '.mim'):
        if (root / INDEX_FILE).is_file() and (root / 'configs' / 'revvit').is_dir():
            return root
    raise FileNotFoundError(
        f'mmrev\'s {INDEX_FILE} is neither in {package.parent} (source checkout) nor in '
        f'{package / ".mim"} (installed package): reinstall mmrev')


def register_models(root: Optional[Path] = None) -> List[str]:
    """Register the models of ``root/model-index.yml`` (and their aliases) with
    ModelHub, once; return their names, aliases included."""
    root = Path(root) if root is not None else model_index_root()
    hub = ModelHub._models_dict
    index = root / INDEX_FILE
    from modelindex.load_model_index import load
    models = load(str(index)).models
    names = [m.name.lower() for m in models]
    if not all(name in hub for name in names):
        ModelHub.register_model_index(index, config_prefix=root)
    registered = []
    for name, model in zip(names, models):
        alias = model.data.get('Alias')
        if alias is not None:
            alias = alias.lower()
            owner = hub.get(alias)
            if owner is not None and owner is not hub[name]:
                raise ValueError(f'The alias {alias!r} of {name} is already the name of '
                                 f'another model ({owner.name})')
            hub[alias] = hub[name]
            registered.append(alias)
        registered.append(name)
    return registered
