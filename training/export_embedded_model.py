"""
Copy an assembled pipeline folder into the package as the embedded model, storing the diffusers networks' weights in
float16 (diffusers loads them back as float32), so the folder stays under the 50 MB budget.

    python training/export_embedded_model.py --pipeline_dir runs/shapes/pipeline \
        --output_dir src/unclip_pipelines/embedded_model
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil

from safetensors.torch import load_file, save_file

# diffusers ModelMixin components: loaded in float32 whatever the stored dtype (transformers 5 would keep float16)
HALF_PRECISION_COMPONENTS = ("prior", "decoder", "text_proj", "super_res_first", "super_res_last",
                             "super_res_2_first", "super_res_2_last", "super_res_3_first", "super_res_3_last")


def export(pipeline_dir: str, output_dir: str) -> int:
    """Copy and cast; returns the folder's size in bytes."""
    if os.path.exists(output_dir):
        shutil.rmtree(output_dir)
    shutil.copytree(pipeline_dir, output_dir)
    for component in HALF_PRECISION_COMPONENTS:
        for path in glob.glob(os.path.join(output_dir, component, "*.safetensors")):
            weights = load_file(path)
            save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, path, {"format": "pt"})
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(output_dir, "**", "*"), recursive=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline_dir", required=True)
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args(argv)
    size = export(args.pipeline_dir, args.output_dir)
    print(f"{args.output_dir}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
