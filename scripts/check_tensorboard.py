"""Reads a run's TensorBoard event files with TensorBoard's own reader and prints every scalar
as JSON: {tag: [[step, value], ...]}. The train crate's tests compare it with the run's CSV logs.

Usage: check_tensorboard.py RUN_DIR/tensorboard
"""

import json
import sys

from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    # size_guidance 0: keep every event (the default samples 10,000 per tag).
    acc = EventAccumulator(sys.argv[1], size_guidance={SCALARS: 0})
    acc.Reload()
    out = {
        tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()[SCALARS]
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
