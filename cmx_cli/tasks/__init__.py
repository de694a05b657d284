"""One module per head: what it trains on, what it predicts, and how its model is rebuilt
from a checkpoint (sequence classification, masked bases with zero-shot variant scores,
variant classification)."""
