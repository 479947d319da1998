//! `--camera` specs: which source to open and at what size and rate.

use std::fmt;
use std::path::PathBuf;

/// Replay rate of a `file:` source when the spec names none.
pub const DEFAULT_FILE_FPS: u32 = 15;

/// What `--camera` names.
#[derive(Clone, Debug, PartialEq)]
pub enum CameraSpec {
    /// A generated moving picture, `synthetic:WxH@FPS`.
    Synthetic { width: u32, height: u32, fps: u32 },
    /// A V4L2 device, `v4l2:/dev/videoN[:WxH@FPS]`; size and rate are requests, the device decides.
    V4l2 {
        device: PathBuf,
        mode: Option<(u32, u32, u32)>,
    },
    /// Replays a directory of .jpg files or one .mjpeg file, `file:PATH[@FPS]`, at `fps`
    /// (default 15).
    File { path: PathBuf, fps: u32 },
}

impl CameraSpec {
    pub fn parse(text: &str) -> Result<CameraSpec, String> {
        let usage = "expected synthetic:WxH@FPS, v4l2:/dev/videoN[:WxH@FPS] or file:PATH[@FPS]";
        let (kind, rest) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?}: {usage}"))?;
        match kind {
            "synthetic" => {
                let (width, height, fps) = parse_mode(rest)?;
                Ok(CameraSpec::Synthetic { width, height, fps })
            }
            "v4l2" => {
                let (device, mode) = match rest.split_once(':') {
                    Some((device, mode)) => (device, Some(parse_mode(mode)?)),
                    None => (rest, None),
                };
                if !device.starts_with('/') {
                    return Err(format!("{device:?} is not a device path like /dev/video0"));
                }
                Ok(CameraSpec::V4l2 {
                    device: PathBuf::from(device),
                    mode,
                })
            }
            "file" if !rest.is_empty() => {
                // `@FPS` only when what follows the last `@` is a number, so a path that merely
                // contains an `@` still works.
                let (path, fps) = match rest.rsplit_once('@') {
                    Some((path, fps))
                        if !path.is_empty()
                            && !fps.is_empty()
                            && fps.bytes().all(|b| b.is_ascii_digit()) =>
                    {
                        let fps: u32 = fps
                            .parse()
                            .ok()
                            .filter(|f| (1..=60).contains(f))
                            .ok_or_else(|| format!("{fps} fps: the rate must be 1 to 60"))?;
                        (path, fps)
                    }
                    _ => (rest, DEFAULT_FILE_FPS),
                };
                Ok(CameraSpec::File {
                    path: PathBuf::from(path),
                    fps,
                })
            }
            _ => Err(format!("{text:?}: {usage}")),
        }
    }
}

/// `WxH@FPS` with sane bounds (a typo like 64000x480 is an error, not an allocation).
fn parse_mode(text: &str) -> Result<(u32, u32, u32), String> {
    let bad = || format!("{text:?} is not WxH@FPS (e.g. 640x480@15)");
    let (size, fps) = text.split_once('@').ok_or_else(bad)?;
    let (w, h) = size.split_once('x').ok_or_else(bad)?;
    let width: u32 = w.parse().map_err(|_| bad())?;
    let height: u32 = h.parse().map_err(|_| bad())?;
    let fps: u32 = fps.parse().map_err(|_| bad())?;
    if !(16..=4096).contains(&width) || !(16..=4096).contains(&height) {
        return Err(format!(
            "{width}x{height}: width and height must be 16 to 4096"
        ));
    }
    if !(1..=60).contains(&fps) {
        return Err(format!("{fps} fps: the rate must be 1 to 60"));
    }
    Ok((width, height, fps))
}

impl fmt::Display for CameraSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CameraSpec::Synthetic { width, height, fps } => {
                write!(f, "synthetic:{width}x{height}@{fps}")
            }
            CameraSpec::V4l2 { device, mode } => {
                write!(f, "v4l2:{}", device.display())?;
                if let Some((w, h, fps)) = mode {
                    write!(f, ":{w}x{h}@{fps}")?;
                }
                Ok(())
            }
            CameraSpec::File { path, fps } => {
                write!(f, "file:{}", path.display())?;
                if *fps != DEFAULT_FILE_FPS {
                    write!(f, "@{fps}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_kind() {
        for text in [
            "synthetic:640x480@15",
            "v4l2:/dev/video0",
            "v4l2:/dev/video2:1280x720@30",
            "file:/tmp/frames",
            "file:/tmp/clip.mjpeg@5",
            "file:/tmp/a@b/frames",
        ] {
            assert_eq!(CameraSpec::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn file_rate_is_optional() {
        assert_eq!(
            CameraSpec::parse("file:/x/clip.mjpeg@5").unwrap(),
            CameraSpec::File {
                path: PathBuf::from("/x/clip.mjpeg"),
                fps: 5
            }
        );
        assert_eq!(
            CameraSpec::parse("file:/x/me@home").unwrap(),
            CameraSpec::File {
                path: PathBuf::from("/x/me@home"),
                fps: DEFAULT_FILE_FPS
            }
        );
    }

    #[test]
    fn rejects_nonsense() {
        for text in [
            "",
            "synthetic",
            "synthetic:640x480",
            "synthetic:0x480@15",
            "synthetic:640x480@0",
            "v4l2:video0",
            "file:",
            "file:/tmp/frames@0",
            "file:/tmp/frames@61",
            "usb:/dev/video0",
        ] {
            assert!(CameraSpec::parse(text).is_err(), "{text} accepted");
        }
    }
}
