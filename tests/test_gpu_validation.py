"""The CPU dry run of ``tools/analysis_tools/gpu_validation.sh``, so that the GPU validation
works the day a GPU is lent: every step but the install (tests, memory, time and
throughput runs of the benchmark tool, the report), on a tiny RevViT."""
import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / 'tools' / 'analysis_tools' / 'gpu_validation.sh'
OUTPUTS = ['gpu_validation.csv', 'gpu_validation.json', 'gpu_validation.log',
           'gpu_validation.md', 'gpu_validation.png', 'pytest_cuda.xml']


def test_dry_run_writes_the_tables_and_results(tmp_path):
    out = tmp_path / 'out'
    env = dict(os.environ, GPU_VALIDATION_DRY_RUN='1', OUT=str(out), PYTHON=sys.executable,
               TMPDIR=str(tmp_path), CUDA_VISIBLE_DEVICES='')
    result = subprocess.run(['bash', str(SCRIPT)], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS  # at most 8 files come back
    assert [p.name for p in tmp_path.iterdir()] == ['out']  # its work folder removed

    report = json.loads((out / 'gpu_validation.json').read_text())
    assert report['meta']['dry_run'] and report['tests']['ran']
    assert report['tests']['skipped'] == report['tests']['tests'] > 0  # no GPU here
    assert [(run['name'], run['kind'], run['rc']) for run in report['runs']] == [
        ('vit-tiny', 'memory', 0), ('depth', 'time', 0),
        ('tp-vit-tiny-b4', 'throughput', 0)]  # the cap: 4 images
    memory = {row['case']: row for row in report['memory']}
    assert set(memory) == {'mmrev-rev', 'mmpretrain-vit'}
    for row in memory.values():
        assert row['throughput_batch'] == 4 and row['train_img_s'] > 0
        assert row['max_batch_4GiB'] is None or row['max_batch_8GiB'] >= row['max_batch_4GiB']
    assert {row['case'] for row in report['time']} == set(memory)
    assert all(row['step_s'] > 0 and row['eval_img_s'] > 0 for row in report['time'])

    table = (out / 'gpu_validation.md').read_text()
    assert 'CPU DRY RUN' in table and '| RevViT-32, 2 blocks | mmrev-rev |' in table
    assert table in result.stdout  # printed at the end
