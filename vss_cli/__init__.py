"""vss: a command-line workbench for structured channel pruning of semantic-segmentation networks."""

__version__ = "0.1.0"
