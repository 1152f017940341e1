"""RUAS (Liu et al., CVPR 2021): Retinex-inspired unrolling with cooperative architecture search."""
