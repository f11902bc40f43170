"""Errors of the decode stage: what is wrong with which video file.

Every message is one sentence that names the file. The CLI prints it as one line on stderr;
`serve/` maps `http_status` to the response code.
"""

from __future__ import annotations

from encoders.errors import VidsieveError


class VideoDecodeError(VidsieveError):
    """The file could not be decoded into frames (missing, empty, corrupt, no frames...)."""

    http_status = 422


class UnsupportedVideo(VideoDecodeError):
    """The file is readable but is not a video vidsieve can use (not a media file, audio only...)."""

    http_status = 415


class VideoLimitExceeded(VideoDecodeError):
    """The video breaks a limit: decode time, frame size."""

    http_status = 422
