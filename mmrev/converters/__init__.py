from .config_file import classifier_config, config_text, model_config, recognizer_config
from .convert_file import (
    ConversionResult,
    check_weights_fit,
    convert_slowfast_file,
    read_checkpoint,
)
from .slowfast import (
    SlowFastConversionError,
    convert_if_slowfast,
    convert_slowfast_checkpoint,
    convert_state_dict,
    detect_model_kind,
    is_slowfast_checkpoint,
    is_video,
    slowfast_state_dict,
)
from .slowfast_config import (
    ModelSpec,
    VideoProtocol,
    head_channels,
    spec_from_slowfast_cfg,
    spec_from_state_dict,
)

__all__ = [
    'ConversionResult', 'ModelSpec', 'SlowFastConversionError', 'VideoProtocol',
    'check_weights_fit', 'model_config', 'recognizer_config', 'is_video',
    'classifier_config', 'config_text', 'convert_if_slowfast', 'convert_slowfast_checkpoint',
    'convert_slowfast_file', 'convert_state_dict', 'detect_model_kind', 'head_channels',
    'is_slowfast_checkpoint', 'read_checkpoint', 'slowfast_state_dict',
    'spec_from_slowfast_cfg', 'spec_from_state_dict'
]
