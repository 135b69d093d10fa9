"""A real RTSP server for the demo and tests: GStreamer's gst-rtsp-server serving a video file,
looped forever, as H.264 over RTSP.

Run it with Debian's Python, which has the GObject bindings (the project's venv has not)::

    /usr/bin/python3 analytics/vision/rtsp_server.py --port 8554 --file vtest.avi cam-a cam-b

Each mount ``rtsp://127.0.0.1:PORT/NAME`` serves the file. Frames are decoded by one pipeline
that seeks back to the start at end of stream and are pushed into the served pipeline's appsrc
with a continuous timestamp, so a client never sees the end of the file. It prints ``ready`` on
stdout once it listens. This file imports nothing from the project on purpose.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


class LoopingFactory(GstRtspServer.RTSPMediaFactory):
    """A factory whose media pull decoded frames from a looping file decoder."""

    def __init__(self, path: str, fps: int, width: int, height: int, bitrate: int) -> None:
        super().__init__()
        self.path, self.fps, self.width, self.height = path, fps, width, height
        caps = f"video/x-raw,format=I420,width={width},height={height},framerate={fps}/1"
        self.caps = Gst.Caps.from_string(caps)
        self.set_launch(
            f"( appsrc name=src is-live=false format=time caps={caps} "
            f"! x264enc tune=zerolatency speed-preset=ultrafast bitrate={bitrate} "
            f"key-int-max={fps * 2} threads=1 ! video/x-h264,profile=baseline "
            f"! rtph264pay name=pay0 pt=96 config-interval=1 )"
        )
        self.set_shared(True)
        self.connect("media-configure", self._on_configure)

    def _decoder(self) -> tuple[Gst.Pipeline, Gst.Element]:
        pipe = Gst.parse_launch(
            f'filesrc location="{self.path}" ! decodebin ! videoconvert ! videoscale '
            f"! videorate ! {self.caps.to_string()} ! appsink name=sink sync=false max-buffers=8"
        )
        return pipe, pipe.get_by_name("sink")

    def _on_configure(self, factory: object, media: GstRtspServer.RTSPMedia) -> None:
        src = media.get_element().get_by_name("src")
        decoder, sink = self._decoder()
        decoder.set_state(Gst.State.PLAYING)
        state = {"n": 0}
        duration = Gst.SECOND // self.fps

        def pull() -> Gst.Sample | None:
            sample = sink.emit("try-pull-sample", 2 * Gst.SECOND)
            if sample is None:  # end of file: seek back to the start
                decoder.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH, 0)
                sample = sink.emit("try-pull-sample", 2 * Gst.SECOND)
            return sample

        def need_data(appsrc: Gst.Element, _length: int) -> None:
            sample = pull()
            if sample is None:
                appsrc.emit("end-of-stream")
                return
            buf = sample.get_buffer().copy()
            buf.pts = state["n"] * duration
            buf.duration = duration
            state["n"] += 1
            appsrc.emit("push-buffer", buf)

        def unprepared(_media: object) -> None:
            decoder.set_state(Gst.State.NULL)

        src.connect("need-data", need_data)
        media.connect("unprepared", unprepared)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8554)
    p.add_argument("--file", required=True)
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--height", type=int, default=576)
    p.add_argument("--bitrate", type=int, default=1500, help="kbit/s")
    p.add_argument("mounts", nargs="+")
    args = p.parse_args(argv)
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for name in args.mounts:
        factory = LoopingFactory(args.file, args.fps, args.width, args.height, args.bitrate)
        mounts.add_factory(f"/{name}", factory)
    if server.attach(None) == 0:
        print(f"error: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print("ready", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
