"""Generate large valid flows for parser and executor benchmarks."""

from __future__ import annotations

import sys


def layered_flow(steps: int, fan_in: int = 2, model: str = "local") -> str:
    """A flow of `steps` steps; each step sees up to `fan_in` earlier steps and names the input."""
    out = ["version 1", f'flow generated_{steps} "Generated flow of {steps} steps"', "input question", ""]
    for i in range(steps):
        seen = [f"s{j}" for j in range(max(0, i - fan_in), i)]
        sees = f"  sees: {', '.join(seen)}\n" if seen else ""
        out.append(f"step s{i} {{\n  model: {model}\n{sees}  task: \"Step {i} of the work on {{question}}\"\n  max_tokens: 64\n}}\n")
    out.append(f"output s{steps - 1}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(layered_flow(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
