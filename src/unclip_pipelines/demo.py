"""The README's main job: generate one image offline with the default model.

Uses the embedded Shapes World model when the package ships one; otherwise it says so, builds a tiny RANDOM
(untrained) pipeline first, and generates with that (the image is then noise-like: it only shows the stack runs).
"""

from __future__ import annotations

import argparse
import os
import tempfile

from .cli import default_model, main as cli_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompt", default="a red circle to the left of a blue square")
    parser.add_argument("--output", default="unclip-demo.png")
    args = parser.parse_args(argv)

    model = default_model()
    with tempfile.TemporaryDirectory() as tmp:
        if model is None:
            model = os.path.join(tmp, "tiny-random-unclip")
            print("No embedded model is installed yet: building a tiny RANDOM (untrained) unCLIP pipeline first.")
            cli_main(["create-tiny-model", model])
        return cli_main(["generate", args.prompt, "--model", model, "--output", args.output])


if __name__ == "__main__":
    raise SystemExit(main())
