"""Where a process's CPU goes during a benchmark step: py-spy samples, summed by package.

py-spy (`pip install py-spy`, a dev dependency) samples a running Python process's stacks
from outside it, without stopping it (`--nonblocking`) and leaving out threads it sees idle.
Not every sample is CPU: a service's event loop waiting inside uvloop's C code shows as
`Runner.run` (asyncio) and is not always seen as idle, so read the shares among the other
packages, and take CPU time itself from the bench's own per-process figures. A step's profile of
a service is kept as py-spy's raw "collapsed stacks" file (one line per distinct stack:
frames outermost first, separated by `;`, then the sample count), which flame-graph tools
read; the summary printed is the share of samples by the package of the innermost frame
(self time: asyncpg's protocol, pydantic, json, Handoff's own code...) and the busiest
functions.
"""

import math
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

PY_SPY = Path(sys.executable).with_name("py-spy")
SAMPLES_PER_SECOND = 50  # lower than py-spy's 100: its own CPU shares the same two cores


@dataclass
class Recording:
    """One py-spy run attached to `pid` for a step, writing `output` when it ends."""

    name: str
    output: Path
    process: subprocess.Popen[bytes]

    def finish(self, timeout: float = 30.0) -> None:
        """Waits for py-spy to write its file (it stops after its duration)."""
        self.process.wait(timeout=timeout)


def record(name: str, pid: int, seconds: float, output: Path) -> Recording:
    """Starts sampling process `pid` for `seconds` (rounded up to whole seconds) into
    `output`. Raises FileNotFoundError if py-spy is not installed beside this Python."""
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [
        str(PY_SPY), "record", "--pid", str(pid), "--duration", str(math.ceil(seconds)),
        "--rate", str(SAMPLES_PER_SECOND), "--nonblocking", "--format", "raw",
        "--output", str(output),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Recording(name, output, process)


@dataclass
class Profile:
    """A collapsed-stacks file read back: samples by package and by function (self time)."""

    samples: int
    by_package: Counter[str]
    by_function: Counter[str]

    @classmethod
    def read(cls, path: Path) -> "Profile":
        """Reads py-spy's raw output; an absent or empty file is an empty profile."""
        by_package: Counter[str] = Counter()
        by_function: Counter[str] = Counter()
        text = path.read_text() if path.exists() else ""
        for line in text.splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            innermost = stack.rsplit(";", 1)[-1]  # "function (package/module.py:line)"
            function, _, where = innermost.partition(" (")
            module = where.rsplit(":", 1)[0]
            by_package[package_of(module)] += int(count)
            by_function[f"{function} ({module})"] += int(count)
        return cls(sum(by_package.values()), by_package, by_function)

    def summary(self, packages: int = 6, functions: int = 3) -> str:
        """One line: the largest packages' and functions' shares of the samples, in %."""
        if not self.samples:
            return "no samples"

        def share(count: int) -> str:
            return f"{count * 100 / self.samples:.0f}%"

        top = ", ".join(f"{p} {share(c)}" for p, c in self.by_package.most_common(packages))
        busiest = "; ".join(f"{f} {share(c)}" for f, c in self.by_function.most_common(functions))
        return f"{top} | {busiest}"


def package_of(module: str) -> str:
    """The package a frame's file belongs to, as py-spy shortens it ("asyncpg/pool.py",
    "json/encoder.py", "<frozen importlib._bootstrap>"); Handoff's own packages count as
    one, "handoff"."""
    top = module.split("/", 1)[0] if "/" in module else module.removesuffix(".py")
    return "handoff" if top.startswith("handoff") else top
