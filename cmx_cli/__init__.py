"""cmx: train and apply ChordMixer networks to DNA from the command line."""

__version__ = "0.1.0"
