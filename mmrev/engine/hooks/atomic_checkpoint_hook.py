"""mmengine's CheckpointHook, safe against a crash while it saves."""
import os
import os.path as osp
import shutil
from typing import Optional

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook

from mmrev.fileio import write_atomically
from mmrev.registry import HOOKS


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """:class:`mmengine.hooks.CheckpointHook` that loses nothing when the process dies
    while saving (a kill, an out-of-memory, a full disk).

    mmengine's hook deletes the oldest checkpoint kept (``max_keep_ckpts``) *before*
    writing the new one, writes the new one in place and then rewrites
    ``last_checkpoint`` in place: a process killed during the write is left with no
    whole checkpoint (with ``max_keep_ckpts=1``) and possibly an empty
    ``last_checkpoint``. This hook writes the checkpoint to a temporary file beside it
    and renames it into place, then replaces ``last_checkpoint`` the same way, and only
    then deletes outdated checkpoints; at every moment the previous checkpoint and a
    ``last_checkpoint`` naming a whole file exist, so ``--resume`` works. Same
    arguments as ``CheckpointHook``. Checkpoints on other storage backends than the
    local disk, and ``save_best`` checkpoints, are saved as mmengine saves them.
    """

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        outdated = self._keep(runner, step)  # recorded in the checkpoint, as mmengine does
        partial = f'.{filename}.partial'  # a leftover of a killed save is overwritten
        runner.save_checkpoint(
            self.out_dir, partial, self.file_client_args, save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta,
            by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():  # the only one that writes
            return
        os.replace(osp.join(self.out_dir, partial), self.last_ckpt)
        write_atomically({osp.join(runner.work_dir, 'last_checkpoint'):
                          lambda f: f.write(self.last_ckpt.encode())})
        if outdated is not None:  # only now that the new one is in place
            path = osp.join(self.out_dir, self.filename_tmpl.format(outdated))
            if osp.isdir(path):  # checkpoints saved by DeepSpeed are folders
                shutil.rmtree(path)
            elif osp.isfile(path):
                os.remove(path)

    def _keep(self, runner, step: int) -> Optional[int]:
        """Add ``step`` to the ``max_keep_ckpts`` checkpoints kept; return the step
        whose checkpoint is then outdated, if any."""
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids
                                        and self.keep_ckpt_ids[-1] == step):
            return None
        outdated = (self.keep_ckpt_ids.popleft()
                    if len(self.keep_ckpt_ids) == self.max_keep_ckpts else None)
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        return outdated
