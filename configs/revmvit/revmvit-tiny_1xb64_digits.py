# A 5-layer Rev-MViT (3 stages: 2 x 32, 2 x 64, 2 x 128 channels on 8x8, 4x4, 2x2 tokens)
# trained with reversible backprop on scikit-learn's digits
# (tools/dataset_converters/prepare_digits.py); schedule of revvit-tiny_1xb64_digits.py.
_base_ = ['../revvit/revvit-tiny_1xb64_digits.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmrev.RevMViT',
        arch=dict(embed_dims=32, num_layers=5, num_heads=1, transition_layers=(1, 3),
                  kv_stride=2, patch_kernel=4, patch_stride=4, patch_padding=0),
        img_size=32,
        drop_path_rate=0.1,
        reversible=True),
    head=dict(in_channels=256),
)
