"""The model cards' picture of real dark photos:  python docs/img/make_real_sheet.py [--data DIR] [--releases DIR]

real_photos.jpg: the six darkest photos of ``../shared/data/real`` (LIME and MEF, ranked by mean
brightness: the rule picks them, not a look at the outputs), one row each: the input | each shipped
model | the RUAS authors' releases imported with nasflow's importer in this run (journal ``mit.pt``,
CVPR ``upe.pt`` and ``lol.pt``) when ``../shared/releases`` exists. Small thumbnails (120 px high),
JPEG: a picture to compare models by, not a copy of the benchmark photos.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
RELEASES = (("journal", "mit"), ("cvpr", "upe"), ("cvpr", "lol"))
ROWS = 6
HEIGHT = 120


def darkest(folder: Path, count: int) -> list[Path]:
    from nasflow.infer.imageio import IMAGE_SUFFIXES, read_image

    photos = sorted(p for sub in ("LIME", "MEF") for p in (folder / sub).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return sorted(photos, key=lambda p: float(read_image(p).rgb.mean()))[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--releases", type=Path, default=ROOT.parent / "shared" / "releases")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "real_photos.jpg")
    args = parser.parse_args()

    import nasflow
    from nasflow.infer.imageio import read_image
    from nasflow.registries import MODELS
    from nasflow.tasks.ruas.official import import_released

    models = {name: nasflow.load_model(name, device="cpu") for name in MODELS.names() if ":" not in name}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, stem in RELEASES:
            path = args.releases / kind / f"{stem}.pt"
            if path.is_file():
                models[f"release {kind}/{stem}"] = nasflow.load_model(
                    import_released(path, Path(tmp) / f"{kind}-{stem}.pt"), device="cpu")
        rows = []
        for photo in darkest(args.data / "real", ROWS):
            rgb = read_image(photo).rgb
            tiles = [rgb] + [m.enhance_rgb(rgb) for m in models.values()]
            scale = HEIGHT / rgb.shape[0]
            size = (max(1, round(rgb.shape[1] * scale)), HEIGHT)
            rows.append(np.concatenate([np.asarray(Image.fromarray(
                (np.clip(t, 0, 1) * 255).round().astype(np.uint8)).resize(size, Image.Resampling.BICUBIC))
                for t in tiles], axis=1))
    width = max(r.shape[1] for r in rows)
    sheet = np.concatenate([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
    Image.fromarray(sheet).save(args.out, quality=88, optimize=True)
    print(f"{args.out}: rows = {', '.join(p.name for p in darkest(args.data / 'real', ROWS))}; "
          f"columns = input | {' | '.join(models)}")


if __name__ == "__main__":
    main()
