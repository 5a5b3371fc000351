"""Weights of real magnitude for numerical checks and speed measurements (a freshly built model
outputs near-zero logits that hide mistakes), and copying a state dict between two models."""

import numpy as np


def randomize_(model, seed=0):
    """Fill every parameter and every BatchNorm running mean/variance with random values of
    real magnitude (a freshly built model outputs near-zero logits that hide mistakes).

    Weights ~ N(0, 1/fan_in) so activations keep their scale through deep stacks; BN scale in
    [0.5, 1.5], shift and running mean ~ N(0, 0.1^2), running variance in [0.5, 2]."""
    rng = np.random.default_rng(seed)
    for name, t in model.state_dict().items():
        shape = t.shape
        if name.endswith("_variance"):
            v = rng.uniform(0.5, 2.0, shape)
        elif name.endswith("_mean"):
            v = rng.normal(0.0, 0.1, shape)
        elif len(shape) == 1:  # BN weight/bias and conv/linear bias
            if name.endswith(".weight"):
                v = rng.uniform(0.5, 1.5, shape)
            else:
                v = rng.normal(0.0, 0.1, shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else shape[0]
            v = rng.normal(0.0, (1.0 / max(fan_in, 1)) ** 0.5, shape)
        t.set_value(v.astype("float32"))
    return model


def copy_state_(dst, src):
    """Copy ``src``'s state dict into ``dst``; raise if any key or shape differs."""
    s, d = src.state_dict(), dst.state_dict()
    missing, unexpected = sorted(set(d) - set(s)), sorted(set(s) - set(d))
    if missing or unexpected:
        raise KeyError(f"state dicts differ: missing {missing[:10]}, unexpected {unexpected[:10]}")
    for k, v in s.items():
        if list(d[k].shape) != list(v.shape):
            raise ValueError(f"{k}: shape {list(d[k].shape)} vs {list(v.shape)}")
        d[k].set_value(v.numpy())
    return dst
