"""Training scripts of unCLIP (diffusers ``examples/`` style): one accelerate script per stage, plus assembly."""

import os

# Set before torch loads OpenMP: on a shared CPU, spinning OpenMP threads stall each other (measured 3-5x slower).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
