"""Time one training step of a small MLP with 1 and 2 torch threads, quiet and busy.

"Busy" runs one other process that spins on a core, as a second job, a test
suite or another worker would. Run it on your machine::

    python doc/_scripts/threads.py
"""

import statistics
import subprocess
import sys
import time

import torch


def step_ms(threads, repeats=300):
    """Return the median milliseconds of one forward, backward and Adam step."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    )
    optimizer = torch.optim.Adam(net.parameters())
    X, y = torch.randn(128, 784), torch.randint(0, 10, (128,))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(X), y).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[repeats // 6 :])


def main():
    """Print the medians, quiet and beside one busy process."""
    for busy in (False, True):
        spinner = None
        if busy:
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(0.5)
        try:
            cells = ", ".join(f"{t} thread(s): {step_ms(t):.2f} ms" for t in (1, 2))
            print(f"{'one other busy process' if busy else 'quiet':>22}: {cells}")
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()


if __name__ == "__main__":
    main()
