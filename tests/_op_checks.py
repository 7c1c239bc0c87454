"""Checks shared by the dense and the convolutional op tests."""
import torch

from pymusicrbm import ops


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


def assert_step_replays_in_a_cuda_graph(step, params):
    """``step(*params)`` (a training step on CUDA tensors, drawing from the default generator) is captured in a CUDA
    graph; each replay must give what an eager step from the same generator state gives (the draws are graph-safe:
    read on the device at replay), and no host synchronisation may happen inside (capture would fail)."""
    eager = [t.clone() for t in params]
    captured = [t.clone() for t in params]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture (cuBLAS/cuDNN handles, allocator), as torch asks
        for _ in range(2):
            step(*[t.clone() for t in params])
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step(*captured)
    for _ in range(3):
        state = torch.cuda.get_rng_state()
        want = step(*eager)
        torch.cuda.set_rng_state(state)
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(out, want)
        for a, e in zip(captured, eager):
            torch.testing.assert_close(a, e)


def assert_split_step_equals_fused(recon, fused, chains_fused, stats, split, chains_split, v, **update):
    """After a fused step (error ``recon``, parameters and velocities ``fused``) and the statistics ``stats`` of the
    same step on a copy (``split``, drawn from the same generator state): applying them with ``cd_apply_`` must
    give the fused step's parameters, velocities, chains and error bit for bit."""
    dW, db, dc, sq_err = stats
    ok = ops.cd_apply_(*split, dW, db, dc, **update)
    assert ok.dtype == torch.bool and ok.shape == () and ok.device == v.device and bool(ok)
    assert torch.equal(recon, sq_err / v.numel())
    for a, b in zip(fused, split):
        assert torch.equal(a, b)
    if chains_fused is not None:
        assert torch.equal(chains_fused, chains_split)
