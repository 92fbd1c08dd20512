"""The image's fixtures (tests/support/image.py), for this folder only: nothing else builds the image."""

from tests.support.image import image_config, image_runner, recorder_image

__all__ = ["image_config", "image_runner", "recorder_image"]
