"""Training loops, checkpointing and progress reporting."""
