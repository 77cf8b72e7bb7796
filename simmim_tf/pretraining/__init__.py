"""Pre-training pieces: SimMIM masking and reconstruction, contrastive loss."""
