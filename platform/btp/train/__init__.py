"""btp.train: the per-worker training loop on Ray Train with FSDP2, its optimizer and checkpoints."""
