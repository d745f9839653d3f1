"""Video layer: media files → RGB frames (``frames``) → the largest face per frame (``faces``,
with MTCNN's cascade in ``mtcnn``)."""
