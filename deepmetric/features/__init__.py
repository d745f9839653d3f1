"""Feature layer: face crops → FaceNet embeddings and tapped layers (``embedder``, offline
``weights``), second backbones on the same crops (``imagenet``: MobileNetV2; ``facemesh``:
MediaPipe FaceMesh geometry), the crop's power ``spectrum``, self-blended pseudo-fakes
(``blend``), the per-clip ``cache`` and the ``extract`` loop over a manifest; ``finetune``
trains FaceNet itself."""
