"""Feature layer: face crops → FaceNet embeddings and tapped layers (``embedder``, offline
``weights``), the crop's power ``spectrum``, self-blended pseudo-fakes (``blend``), the per-clip
``cache`` and the ``extract`` loop over a manifest; ``finetune`` trains FaceNet itself."""
