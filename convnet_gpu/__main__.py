"""python -m convnet_gpu -> the convnet-gpu CLI."""

import sys

from .cli import main

sys.exit(main())
