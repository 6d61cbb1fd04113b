"""Command line: write a synthetic PTB-XL or PTB twin (`cardioformer_jax.data.synthetic`)."""

from __future__ import annotations

from cardioformer_jax.data.synthetic import main

if __name__ == "__main__":
    main()
