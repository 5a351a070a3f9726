import numpy as np
import pytest
from gymnasium import spaces


def random_actions(space: spaces.Space, n: int, rng: np.random.Generator) -> np.ndarray:
    """n random actions from a single-agent action space, in the dtype the env buffers use."""
    if isinstance(space, spaces.Discrete):
        return rng.integers(0, space.n, n).astype(np.int32)
    if isinstance(space, spaces.MultiDiscrete):
        return np.stack([rng.integers(0, k, n) for k in space.nvec.ravel()], -1).astype(np.int32)
    if isinstance(space, spaces.Box):
        low = np.maximum(space.low, -10.0)
        high = np.minimum(space.high, 10.0)
        return rng.uniform(low, high, (n, *space.shape)).astype(np.float32)
    raise TypeError(space)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one torch thread is fastest and immune to a busy machine's thread
    contention. Modules opt in with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch  # here, not at the top: most test modules must run without importing torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def default_stop_signals():
    """SIGINT and SIGTERM as a fresh interactive Python has them (Python's KeyboardInterrupt
    handler, and the default action), whatever this test process inherited: a test run started
    in the background (``pytest ... &`` in a script) begins with SIGINT ignored."""
    import signal

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for s, handler in previous.items():
        signal.signal(s, handler)


def interactive_signals() -> None:
    """``preexec_fn`` for subprocesses a test interrupts: SIGINT and SIGTERM at their defaults
    (a child inherits ignored signals, and Python then installs no KeyboardInterrupt handler)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
