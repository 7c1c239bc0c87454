"""Checks shared by the dense and the convolutional op tests."""
import torch


def assert_compiled_step_matches_eager(step, params, v):
    """``step(*params, v)`` mutates its parameter tensors and returns outputs: traced whole by torch.compile
    (fullgraph, so no op falls back to eager), it must give the same outputs and updates as the eager call on the
    same random stream."""
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    args_c = [t.clone() for t in params]
    args_e = [t.clone() for t in params]
    torch.manual_seed(0)
    out_c = compiled(*args_c, v)
    torch.manual_seed(0)
    out_e = step(*args_e, v)
    for a, e in zip(list(out_c) + args_c, list(out_e) + args_e):
        torch.testing.assert_close(a, e)
