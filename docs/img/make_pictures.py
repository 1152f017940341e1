"""Regenerate the README pictures with nasflow itself:  python docs/img/make_pictures.py

before_after.png: a photo bundled with scikit-image, darkened (gamma 1.6, x0.25) as a stand-in
low-light input | ruas-lol | ruas-auto. paper_genotype.svg: `nasflow viz` of the RUAS paper genotype.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

import nasflow
from nasflow.tasks.ruas.model import paper_genotype

here = Path(__file__).resolve().parent
photo = data.astronaut()[::2, ::2].astype(np.float32) / 255
dark = (np.power(photo, 1.6) * 0.25 * 255).round().astype(np.uint8)
rows = [nasflow.load_model(name, device="cpu").enhance(dark) for name in ("ruas-lol", "ruas-auto")]
Image.fromarray(np.concatenate([dark, *rows], axis=1)).save(here / "before_after.png", optimize=True)
paper_genotype(True).save(here / "paper_genotype.json")
subprocess.run([sys.executable, "-m", "nasflow", "viz", str(here / "paper_genotype.json"), "-o",
                str(here / "paper_genotype"), "--format", "svg"], check=True)
