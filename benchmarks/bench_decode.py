"""Decode speed-up of JPEG draft mode (DCT-domain downscaling) on 4032x3024 street scenes.

Prints the time to get a 256-px image from full decoding + resize against
`roadwork.data.decode.load_rgb(path, max_side=256)` (draft mode), measured in the same run.

    python benchmarks/bench_decode.py [--n 6] [--side 256]
"""

import argparse
import tempfile
import time
from pathlib import Path

from PIL import Image

from roadwork.config import SyntheticParams
from roadwork.data.decode import load_rgb
from roadwork.data.synthetic import generate


def best_of(fn, repeats=3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=6, help="number of 4032x3024 scenes")
    parser.add_argument("--side", type=int, default=256, help="target shorter side")
    args = parser.parse_args()
    params = SyntheticParams(
        count=args.n, width=4032, height=3024, exact_duplicates=0, pixel_duplicates=0, near_duplicates=0, broken_files=0
    )
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for item in generate(params):
            if item.ref.endswith(".jpg"):
                path = Path(tmp) / Path(item.ref).name
                path.write_bytes(item.data)
                paths.append(path)

        def full():
            for path in paths:
                with Image.open(path) as image:
                    image = image.convert("RGB")
                    scale = args.side / min(image.size)
                    image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)

        def draft():
            for path in paths:
                image = load_rgb(path, max_side=args.side)
                scale = args.side / min(image.size)
                image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)

        t_full, t_draft = best_of(full), best_of(draft)
    n = len(paths)
    print(f"{n} JPEGs of 4032x3024 -> shorter side {args.side}")
    print(f"full decode + resize : {t_full / n * 1000:7.1f} ms/image")
    print(f"draft decode + resize: {t_draft / n * 1000:7.1f} ms/image")
    print(f"speed-up: {t_full / t_draft:.2f}x")


if __name__ == "__main__":
    main()
