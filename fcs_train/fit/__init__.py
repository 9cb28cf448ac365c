"""`fcs fit`: what fits on a GPU, predicted on any machine (issue 21)."""
