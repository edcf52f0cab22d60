"""Time each layer's forward and backward, the loss and the optimizer step of one training step.

    PYTHONPATH=. python scripts/profile_layers.py [BATCH] [MODEL] [DEVICE] [PRECISION]

A thin wrapper around convnet_gpu.profile (how each piece is timed is said there); the same table
as `convnet-gpu bench --layers --device DEVICE --model MODEL --batch-size BATCH`.
"""

import sys

from convnet_gpu.profile import format_layer_table, profile_layers

batch_size = int(sys.argv[1]) if len(sys.argv) > 1 else 64
model = sys.argv[2] if len(sys.argv) > 2 else "simple-cnn"
device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
precision = sys.argv[4] if len(sys.argv) > 4 else "fp32"
described, rows = profile_layers(device, model, batch_size, precision=precision)
print(format_layer_table(rows, described, batch_size))
