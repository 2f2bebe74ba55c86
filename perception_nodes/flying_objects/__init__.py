"""YOLOv8 flying-object detector: drones, birds, airplanes and helicopters in the camera, lifted to 3D.

Core modules (no rclpy): ``preprocess`` (letterbox, normalization), ``postprocess`` (decode, NMS,
rescale), ``classes`` (model class names -> racestack class ids), ``detector`` (the backends),
``lifting`` (2D boxes -> 3D with LiDAR points or size priors), ``dataset``/``training``/``evaluation``
(``racestack dataset|train detector``; ``racestack export detector`` uses ``detector.network_spec``).
``node`` is the ROS 2 wrapper.
"""
