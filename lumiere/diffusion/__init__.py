"""The diffusion process (schedule, loss), the denoiser view of a network, and the samplers."""
