"""Run a detector on one image and draw its predictions (mmdet's inference_detector and
DetLocalVisualizer), e.g. to look at what a trained checkpoint finds.

Usage: python tools/analysis_tools/predict_image.py CONFIG CHECKPOINT IMAGE OUT
       [--score-thr 0.3] [--device cpu]
"""
import argparse

import mmcv
from mmdet.apis import inference_detector, init_detector
from mmdet.registry import VISUALIZERS

import mmrev  # noqa: F401  registers the mmrev scope and its checkpoint loading


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('image')
    parser.add_argument('out', help='the picture to write')
    parser.add_argument('--score-thr', type=float, default=0.3)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    model = init_detector(args.config, args.checkpoint, device=args.device)
    result = inference_detector(model, args.image)
    visualizer = VISUALIZERS.build(dict(type='DetLocalVisualizer',
                                        name='mmrev_predict_image'))
    visualizer.dataset_meta = model.dataset_meta
    visualizer.add_datasample('prediction', mmcv.imread(args.image, channel_order='rgb'),
                              data_sample=result, draw_gt=False,
                              pred_score_thr=args.score_thr, out_file=args.out)
    kept = int((result.pred_instances.scores >= args.score_thr).sum())
    print(f'{kept} detections with score >= {args.score_thr} drawn in {args.out}')


if __name__ == '__main__':
    main()
