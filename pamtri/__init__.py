"""pamtri: pose-aware vehicle re-identification (PAMTRI, ICCV 2019; StRDAN, CVPR-W 2020).

One installed package: ``pamtri.pose`` (stage 1), ``pamtri.reid`` (stage 2), ``pamtri.pipeline`` (both
stages wired together, the CLI), above ``pamtri.common`` (errors, atomic files, configs, checkpoints,
runtime, the training engine). ``python -m pamtri`` runs the CLI.
"""
__version__ = "0.1.0"
