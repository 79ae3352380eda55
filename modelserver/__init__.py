"""Model loading, generation and LoRA training; usable without Django."""
