"""``mobileseg train`` for the multi-process test: afterwards every rank saves its weights to
``<save_dir>/rank<N>.pdparams`` so the test can compare the replicas."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import paddle  # noqa: E402
import paddleseg.core  # noqa: E402

from mobileseg_paddle.cli import main  # noqa: E402

_train = paddleseg.core.train


def train_and_save_replica(model, *args, save_dir, **kwargs):
    _train(model, *args, save_dir=save_dir, **kwargs)
    rank = paddle.distributed.get_rank()
    paddle.save(model.state_dict(), os.path.join(save_dir, f"rank{rank}.pdparams"))


paddleseg.core.train = train_and_save_replica

if __name__ == "__main__":
    sys.exit(main())
