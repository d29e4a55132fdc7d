"""sure-ood: the SURE-OOD recipe (ECCV 2024 SSB challenge, OSR track) as a Snakemake workflow."""

__version__ = "0.1.0"
