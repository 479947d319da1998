"""MJPEG through the players and integrations people point at porchlight (issue 13), each a real
third-party client against the real binary: aiohttp's MultipartReader (how Home Assistant-style
proxies read parts), requests with Home Assistant's way of taking a still image out of an MJPEG
stream, ffmpeg and mpv decoding frames, VLC writing decoded frames to PNG files (run as another
user: VLC refuses root), Basic auth with `user:TOKEN@` in the URL (ffmpeg, mpv and VLC send it
only when challenged), and the README's real-time recording recipe.
"""

import asyncio
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp
import pytest
import requests
from PIL import Image

from conftest import TOKEN_FLAGS, VIEWER, TIMEOUT, run

FRAMES = 8
# An unused uid/gid for VLC, which refuses to run as root.
VLC_UID = 47913


@pytest.fixture(scope="module")
def camera_server():
    from conftest import Server
    s = Server(args=[*TOKEN_FLAGS, "--camera", "synthetic:640x480@15"])
    yield s
    s.close()


def authed_url(server, path, user="nvr", token=VIEWER):
    return f"http://{user}:{token}@127.0.0.1:{server.port}{path}"


def decoded_sizes(directory, pattern="*.png"):
    files = sorted(Path(directory).glob(pattern))
    sizes = []
    for f in files:
        with Image.open(f) as img:
            img.load()  # decodes every pixel: a truncated frame fails here
            sizes.append(img.size)
    return sizes


def report(capsys, text):
    with capsys.disabled():
        print(f"\n[interop] {text}")


def test_aiohttp_multipart_reader_reads_every_part(camera_server, capsys):
    async def body():
        # The camera's username/password fields, as Basic credentials on every request.
        auth = {"Authorization": aiohttp.encode_basic_auth("homeassistant", VIEWER)}
        timeout = aiohttp.ClientTimeout(total=60, sock_read=TIMEOUT)
        async with aiohttp.ClientSession(headers=auth, timeout=timeout) as session:
            url = f"{camera_server.origin}/stream/video?quality=low"
            async with session.get(url) as response:
                assert response.status == 200
                reader = aiohttp.MultipartReader.from_response(response)
                ids = []
                started = time.monotonic()
                for _ in range(FRAMES):
                    part = await reader.next()
                    assert part is not None, "the multipart stream ended"
                    assert part.headers["Content-Type"] == "image/jpeg"
                    jpeg = await part.read()
                    assert len(jpeg) == int(part.headers["Content-Length"])
                    with Image.open(io.BytesIO(jpeg)) as img:
                        img.load()
                        assert img.size == (320, 240)
                    ids.append(int(part.headers["X-Frame-Id"]))
                took = time.monotonic() - started
        return ids, took

    ids, took = run(body())
    assert ids == sorted(set(ids)), ids
    report(capsys, f"aiohttp MultipartReader: {FRAMES} parts decoded in {took:.2f} s, ids {ids}")


def still_from_mjpeg(chunks):
    """Home Assistant's way of getting a still image from an MJPEG stream (its behaviour, our
    code): collect bytes until both a JPEG end and a start marker were seen, and return what lies
    from the start to the end marker."""
    data = b""
    for chunk in chunks:
        data += chunk
        end = data.find(b"\xff\xd9")
        if end == -1:
            continue
        start = data.find(b"\xff\xd8")
        if start == -1:
            continue
        return data[start:end + 2]
    return None


def test_requests_with_home_assistant_still_image_extraction(camera_server, capsys):
    auth = requests.auth.HTTPBasicAuth("homeassistant", VIEWER)
    started = time.monotonic()
    with requests.get(f"{camera_server.origin}/stream/video?quality=low", auth=auth,
                      stream=True, timeout=TIMEOUT) as response:
        assert response.status_code == 200
        jpeg = still_from_mjpeg(response.iter_content(102400))
    took = time.monotonic() - started
    assert jpeg, "no JPEG found in the stream"
    with Image.open(io.BytesIO(jpeg)) as img:
        img.load()
        assert img.size == (320, 240)
    # The still image URL of Home Assistant's MJPEG camera, with its username/password fields.
    still = requests.get(f"{camera_server.origin}/api/snapshot.jpg", auth=auth, timeout=TIMEOUT)
    assert still.status_code == 200 and still.headers["Content-Type"] == "image/jpeg"
    with Image.open(io.BytesIO(still.content)) as img:
        img.load()
        assert img.size == (640, 480)
    wrong = requests.get(f"{camera_server.origin}/api/snapshot.jpg", timeout=TIMEOUT,
                         auth=requests.auth.HTTPBasicAuth("homeassistant", "wrong-token-0"))
    assert wrong.status_code == 401
    report(capsys, f"requests + HA extraction: a {len(jpeg)}-byte still in {took:.2f} s; "
                   f"still image URL with Basic auth: 200")


def test_ffmpeg_decodes_frames_with_basic_auth_in_the_url(camera_server, capsys, tmp_path):
    url = authed_url(camera_server, "/stream/video?quality=low")
    started = time.monotonic()
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", url, "-frames:v", str(FRAMES),
         str(tmp_path / "%03d.png")],
        capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert decoded_sizes(tmp_path) == [(320, 240)] * FRAMES
    # A wrong token is refused, and ffmpeg says so.
    refused = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error",
         "-i", authed_url(camera_server, "/stream/video", token="wrong-token-0"),
         "-frames:v", "1", "-f", "null", "-"],
        capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr
    report(capsys, f"ffmpeg with user:token@ URL: {FRAMES} frames decoded in {took:.2f} s; "
                   "wrong token: 401")


def test_mpv_decodes_frames(camera_server, capsys, tmp_path):
    started = time.monotonic()
    done = subprocess.run(
        ["mpv", "--no-config", "--really-quiet", "--no-audio", "--vo=image",
         "--vo-image-format=png", f"--vo-image-outdir={tmp_path}", f"--frames={FRAMES}",
         authed_url(camera_server, "/stream/video?quality=low", user="mpv")],
        capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert decoded_sizes(tmp_path) == [(320, 240)] * FRAMES
    report(capsys, f"mpv: {FRAMES} frames decoded in {took:.2f} s")


def test_vlc_writes_decoded_frames_as_another_user(camera_server, capsys):
    out = Path(tempfile.mkdtemp(prefix="porchlight-vlc-"))
    out.chmod(0o777)  # written by VLC's uid
    command = [
        "setpriv", f"--reuid={VLC_UID}", f"--regid={VLC_UID}", "--clear-groups",
        "env", f"HOME={out}",
        "cvlc", "--intf", "dummy", "--no-audio", "--vout", "dummy",
        "--video-filter=scene", "--scene-format=png", "--scene-ratio=1",
        "--scene-prefix=frame", f"--scene-path={out}",
        authed_url(camera_server, "/stream/video?quality=low", user="vlc"),
    ]
    started = time.monotonic()
    vlc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    try:
        # The PNG files are the signal: wait until VLC has written enough of them.
        deadline = time.monotonic() + 60
        while len(list(out.glob("frame*.png"))) < FRAMES + 1:
            assert vlc.poll() is None, f"cvlc exited ({vlc.returncode}): {vlc.stderr.read()}"
            assert time.monotonic() < deadline, "VLC wrote too few frames in 60 s"
            time.sleep(0.1)
        took = time.monotonic() - started
    finally:
        vlc.send_signal(signal.SIGTERM)
        try:
            vlc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            vlc.kill()
            vlc.wait()
    # The newest file may still be being written: check the complete ones.
    files = sorted(out.glob("frame*.png"))[:FRAMES]
    for f in files:
        with Image.open(f) as img:
            img.load()
            # VLC's decoder pads the picture to whole 16-line blocks (320x256 for 320x240).
            width, height = img.size
            assert width == 320 and 240 <= height <= 256, (f, img.size)
    shutil.rmtree(out, ignore_errors=True)
    report(capsys, f"VLC (uid {VLC_UID}, user:token@ URL): {FRAMES} frames written as PNG "
                   f"in {took:.2f} s")


# Each recording: ffmpeg input arguments, output arguments, output file name.
RECORDINGS = {
    # README "Live video": re-encoded to H.264, frames kept at their real times.
    "README mp4": (["-use_wallclock_as_timestamps", "1", "-f", "mjpeg"],
                   ["-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "veryfast"],
                   "door.mp4"),
    # README "Live video": the JPEGs as they are.
    "README mkv copy": (["-use_wallclock_as_timestamps", "1", "-f", "mjpeg"], ["-c", "copy"],
                        "door.mkv"),
    # Frigate without go2rtc: its MJPEG input arguments and its H.264 segment recording.
    "Frigate ffmpeg args": (
        ["-avoid_negative_ts", "make_zero", "-fflags", "nobuffer", "-flags", "low_delay",
         "-strict", "experimental", "-fflags", "+genpts+discardcorrupt",
         "-use_wallclock_as_timestamps", "1"],
        ["-f", "segment", "-segment_time", "10", "-segment_format", "mp4",
         "-reset_timestamps", "1", "-c:v", "libx264", "-an"],
        "frigate-%03d.mp4"),
}


@pytest.mark.parametrize("name", list(RECORDINGS))
def test_recordings_keep_real_time(camera_server, capsys, tmp_path, name):
    """A 15 fps stream recorded for 3 s is 3 s of video at the stream's rate (ffmpeg's plain
    `-f mjpeg -i` stamps 25 fps instead: 1.7x fast at 15 fps, 2.5x at 10 fps)."""
    input_args, output_args, file_name = RECORDINGS[name]
    seconds = 3
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", *input_args,
         "-i", authed_url(camera_server, "/stream/video", user="rec"),
         "-t", str(seconds), *output_args, str(tmp_path / file_name)],
        capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    [target] = list(tmp_path.iterdir())
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_frames:format=duration", "-of", "json", str(target)],
        capture_output=True, text=True, timeout=60)
    info = json.loads(probe.stdout)
    duration = float(info["format"]["duration"])
    frames = int(info["streams"][0]["nb_read_frames"])
    rate = frames / duration
    report(capsys, f"recording ({name}): {frames} frames over {duration:.2f} s = {rate:.1f} fps "
                   "(camera 15 fps)")
    assert abs(duration - seconds) < 0.6, duration
    assert frames >= 8, frames
    if "Frigate" not in name:
        # Stamped 25 fps, a 15 fps stream fills 3 s of video with 75 frames. Fewer than 15 a
        # second is a loaded machine (the viewer then gets the newest frame and skips others).
        # Frigate's own H.264 output is constant-rate: it repeats frames up to 25 fps itself.
        assert rate <= 20, f"{rate:.1f} fps: the recording does not keep real time"
