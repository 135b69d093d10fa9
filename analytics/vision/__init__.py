"""Camera event detection: reader → motion → detector → tracker → rules → events.

OpenCV and FFmpeg are told to keep quiet here, before anything imports cv2, so that a bad stream
ends in the project's one-line error rather than a screen of library warnings.
"""

import os

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
# TCP for RTSP: UDP loses packets (grey smears) on busy links and needs open ports.
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
