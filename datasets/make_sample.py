"""Regenerate the shipped sample: python datasets/make_sample.py (from the repo root)."""

from pathlib import Path

from fedlab_kit.data import make_and_write

if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "sample"
    paths = make_and_write(persons=20_000, seed=7, out_dir=out)
    print(f"wrote {len(paths)} files to {out}")
