//! `porchlight --list-cameras`: the V4L2 devices on this machine and what each can deliver
//! (formats, sizes, frame rates), so the user can write a `--camera v4l2:...` that works.
//!
//! Read-only: it opens each device, asks, and closes it; capture itself is `camera/v4l2.rs`.
//! A Raspberry Pi lists many `/dev/video*` nodes that are not cameras (the codec, ISP and
//! metadata nodes); they show with no capture formats and a note saying so.

use std::fmt::Write as _;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::device::VideoDevice;

/// One `/dev/videoN` and what it offers, or why it could not be asked.
#[derive(Debug)]
pub struct Device {
    pub path: PathBuf,
    /// The driver's card name from `/sys/class/video4linux/videoN/name`.
    pub name: Option<String>,
    pub formats: Result<Vec<Format>, String>,
}

#[derive(Debug, PartialEq)]
pub struct Format {
    /// FourCC, e.g. `MJPG`, `YUYV`.
    pub fourcc: String,
    pub description: String,
    pub sizes: Sizes,
}

#[derive(Debug, PartialEq)]
pub enum Sizes {
    /// Each size with the frame rates the device lists for it (frames per second).
    Discrete(Vec<((u32, u32), Vec<f64>)>),
    /// Any size in a range.
    Stepwise {
        min: (u32, u32),
        max: (u32, u32),
        step: (u32, u32),
    },
    /// The device would not say.
    Unknown(String),
}

/// Finds `videoN` character devices in `dev_dir` (numeric order) and asks each what it offers.
/// `sys_dir` is `/sys/class/video4linux`, for the card names.
pub fn discover(dev_dir: &Path, sys_dir: &Path) -> Vec<Device> {
    let Ok(entries) = std::fs::read_dir(dev_dir) else {
        return Vec::new();
    };
    let mut nodes: Vec<(u32, PathBuf, bool)> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let number: u32 = name.strip_prefix("video")?.parse().ok()?;
            let is_char = entry.file_type().is_ok_and(|t| t.is_char_device());
            Some((number, entry.path(), is_char))
        })
        .collect();
    crate::short_sort::sort_short_by(&mut nodes, |a, b| a < b);
    nodes
        .into_iter()
        .map(|(number, path, is_char)| {
            let name = std::fs::read_to_string(sys_dir.join(format!("video{number}/name")))
                .ok()
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty());
            let formats = if is_char {
                query(&path)
            } else {
                Err("not a character device".to_string())
            };
            Device {
                path,
                name,
                formats,
            }
        })
        .collect()
}

/// Opens the device and enumerates its capture formats, sizes and intervals.
fn query(path: &Path) -> Result<Vec<Format>, String> {
    let path_text = path.to_string_lossy();
    let camera = rscam::Camera::new(&path_text).map_err(|e| match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => format!(
            "permission denied: add the user to the `video` group (`sudo adduser $USER video`, \
             then log in again) ({e})"
        ),
        _ => format!("cannot open: {e}"),
    })?;
    describe(&camera)
}

/// What an open device offers: each capture format with its sizes, each size with its rates.
fn describe(camera: &dyn VideoDevice) -> Result<Vec<Format>, String> {
    let formats = camera.formats().map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTTY) => format!("not a V4L2 device ({e})"),
        _ => format!("cannot list formats: {e}"),
    })?;
    Ok(formats
        .into_iter()
        .map(|info| {
            let sizes = match camera.resolutions(&info.fourcc) {
                Ok(rscam::ResolutionInfo::Discretes(list)) => Sizes::Discrete(
                    list.into_iter()
                        .map(|size| (size, frame_rates(camera, &info.fourcc, size)))
                        .collect(),
                ),
                Ok(rscam::ResolutionInfo::Stepwise { min, max, step }) => {
                    Sizes::Stepwise { min, max, step }
                }
                Err(e) => Sizes::Unknown(e.to_string()),
            };
            Format {
                fourcc: String::from_utf8_lossy(&info.fourcc).trim().to_string(),
                description: info.description,
                sizes,
            }
        })
        .collect())
}

/// Frame rates for one size, highest first (V4L2 lists frame intervals: seconds per frame).
fn frame_rates(camera: &dyn VideoDevice, format: &[u8; 4], size: (u32, u32)) -> Vec<f64> {
    let to_fps = |(num, den): (u32, u32)| {
        if num == 0 {
            0.0
        } else {
            f64::from(den) / f64::from(num)
        }
    };
    let mut rates = match camera.intervals(format, size) {
        Ok(rscam::IntervalInfo::Discretes(list)) => list.into_iter().map(to_fps).collect(),
        // A range: the fastest (smallest interval) and the slowest.
        Ok(rscam::IntervalInfo::Stepwise { min, max, .. }) => vec![to_fps(min), to_fps(max)],
        Err(_) => Vec::new(),
    };
    crate::short_sort::sort_short_by(&mut rates, |a, b| a.total_cmp(b).is_gt());
    rates.dedup();
    rates
}

/// What porchlight does with a format, for the listing.
fn usage_note(fourcc: &str) -> &'static str {
    match fourcc {
        "MJPG" | "JPEG" => "preferred: frames passed through untouched",
        "YUYV" => "accepted: encoded to JPEG once per frame",
        _ => "not used by porchlight",
    }
}

fn fps_text(fps: f64) -> String {
    if (fps - fps.round()).abs() < 0.01 {
        format!("{}", fps.round() as u64)
    } else {
        format!("{fps:.1}")
    }
}

/// A `--camera` value that should work: MJPEG before YUYV, the largest size up to 1280x720,
/// its highest rate up to 30 fps.
fn suggestion(device: &Device) -> Option<String> {
    let formats = device.formats.as_ref().ok()?;
    let format = ["MJPG", "JPEG", "YUYV"]
        .iter()
        .find_map(|want| formats.iter().find(|f| f.fourcc == *want))?;
    let Sizes::Discrete(sizes) = &format.sizes else {
        return Some(format!("v4l2:{}", device.path.display()));
    };
    let area = |(w, h): (u32, u32)| u64::from(w) * u64::from(h);
    let fits = sizes.iter().filter(|(size, _)| area(*size) <= 1280 * 720);
    let ((w, h), rates) = fits
        .max_by_key(|(size, _)| area(*size))
        .or_else(|| sizes.iter().min_by_key(|(size, _)| area(*size)))?;
    let fps = rates
        .iter()
        .copied()
        .filter(|fps| *fps >= 1.0)
        .map(|fps| fps.min(30.0).floor() as u32)
        .max()?;
    Some(format!("v4l2:{}:{w}x{h}@{fps}", device.path.display()))
}

/// The listing as printed by `--list-cameras`.
pub fn render(devices: &[Device]) -> String {
    if devices.is_empty() {
        return "No V4L2 video devices (/dev/video*) found.\n\
                Plug in a USB camera (`dmesg` should show uvcvideo), or see the README, \
                \"On a Raspberry Pi\", for a camera module.\n\
                Without a camera, porchlight runs with --camera synthetic:640x480@15.\n"
            .to_string();
    }
    let mut out = String::new();
    for device in devices {
        let _ = write!(out, "{}", device.path.display());
        if let Some(name) = &device.name {
            let _ = write!(out, "  {name}");
        }
        out.push('\n');
        match &device.formats {
            Err(err) => {
                let _ = writeln!(out, "    {err}");
            }
            Ok(formats) if formats.is_empty() => {
                let _ = writeln!(
                    out,
                    "    no video capture formats (a metadata, codec or ISP node, not a camera)"
                );
            }
            Ok(formats) => {
                for format in formats {
                    let _ = writeln!(
                        out,
                        "    {} ({}): {}",
                        format.fourcc,
                        format.description,
                        usage_note(&format.fourcc)
                    );
                    match &format.sizes {
                        Sizes::Discrete(sizes) => {
                            for ((w, h), rates) in sizes {
                                let rates: Vec<String> =
                                    rates.iter().map(|fps| fps_text(*fps)).collect();
                                let _ = writeln!(
                                    out,
                                    "        {:>10}  {} fps",
                                    format!("{w}x{h}"),
                                    if rates.is_empty() {
                                        "?".to_string()
                                    } else {
                                        rates.join(", ")
                                    }
                                );
                            }
                        }
                        Sizes::Stepwise { min, max, step } => {
                            let _ = writeln!(
                                out,
                                "        any size from {}x{} to {}x{} in steps of {}x{}",
                                min.0, min.1, max.0, max.1, step.0, step.1
                            );
                        }
                        Sizes::Unknown(err) => {
                            let _ = writeln!(out, "        sizes unknown: {err}");
                        }
                    }
                }
                if let Some(camera) = suggestion(device) {
                    let _ = writeln!(out, "    use: --camera {camera}");
                }
            }
        }
    }
    out
}

/// `--list-cameras` on this machine.
pub fn list_cameras() -> String {
    render(&discover(
        Path::new("/dev"),
        Path::new("/sys/class/video4linux"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("porchlight-discover-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn no_devices_says_so() {
        let dir = temp_dir("empty");
        std::fs::write(dir.join("null"), "").unwrap();
        let devices = discover(&dir, &dir);
        assert!(devices.is_empty());
        assert!(render(&devices).starts_with("No V4L2 video devices"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_named_like_a_device_is_reported_not_opened() {
        let dir = temp_dir("fake");
        std::fs::write(dir.join("video10"), "").unwrap();
        std::fs::write(dir.join("video2"), "").unwrap();
        std::fs::write(dir.join("videox"), "").unwrap();
        std::fs::create_dir_all(dir.join("sys/video2")).unwrap();
        std::fs::write(dir.join("sys/video2/name"), "USB Camera\n").unwrap();
        let devices = discover(&dir, &dir.join("sys"));
        let paths: Vec<_> = devices.iter().map(|d| d.path.clone()).collect();
        assert_eq!(paths, vec![dir.join("video2"), dir.join("video10")]);
        assert_eq!(devices[0].name.as_deref(), Some("USB Camera"));
        assert_eq!(
            devices[0].formats.as_ref().unwrap_err(),
            "not a character device"
        );
        let text = render(&devices);
        assert!(
            text.contains("video2  USB Camera\n    not a character device"),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_character_device_that_is_not_v4l2_is_opened_and_reported() {
        let dir = temp_dir("chardev");
        let node = std::ffi::CString::new(dir.join("video0").to_str().unwrap()).unwrap();
        // /dev/null's numbers: a real character device that answers no V4L2 ioctl.
        // SAFETY: mknod reads the path we own.
        let made =
            unsafe { libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        if made != 0 {
            eprintln!(
                "skipped: mknod needs CAP_MKNOD ({})",
                std::io::Error::last_os_error()
            );
            return;
        }
        let devices = discover(&dir, &dir);
        assert_eq!(devices.len(), 1);
        let err = devices[0].formats.as_ref().unwrap_err();
        assert!(err.starts_with("not a V4L2 device"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn suggests_mjpeg_at_most_720p() {
        let device = Device {
            path: PathBuf::from("/dev/video0"),
            name: None,
            formats: Ok(vec![
                Format {
                    fourcc: "YUYV".into(),
                    description: "YUYV 4:2:2".into(),
                    sizes: Sizes::Discrete(vec![((640, 480), vec![30.0])]),
                },
                Format {
                    fourcc: "MJPG".into(),
                    description: "Motion-JPEG".into(),
                    sizes: Sizes::Discrete(vec![
                        ((1920, 1080), vec![30.0, 15.0]),
                        ((1280, 720), vec![60.0, 30.0]),
                        ((640, 480), vec![30.0]),
                    ]),
                },
            ]),
        };
        assert_eq!(
            suggestion(&device).as_deref(),
            Some("v4l2:/dev/video0:1280x720@30")
        );
        let text = render(&[device]);
        assert!(text.contains("MJPG (Motion-JPEG): preferred"), "{text}");
        assert!(text.contains("  1280x720  60, 30 fps"), "{text}");
        assert_eq!(fps_text(7.5), "7.5");
    }

    /// A webcam as a USB camera lists itself: MJPEG in three sizes (one with a range of
    /// rates), YUYV in any size, and H.264 whose sizes it will not say.
    fn webcam() -> crate::camera::device::fake::FakeDevice {
        use crate::camera::device::fake::FakeDevice;
        let mut camera = FakeDevice::offering(&[b"MJPG", b"YUYV", b"H264"]);
        camera.sizes = Box::new(|format| match format {
            b"MJPG" => Ok(rscam::ResolutionInfo::Discretes(vec![
                (640, 480),
                (1280, 720),
                (1920, 1080),
            ])),
            b"YUYV" => Ok(rscam::ResolutionInfo::Stepwise {
                min: (160, 120),
                max: (1280, 960),
                step: (16, 8),
            }),
            _ => Err(rscam::Error::BadFormat),
        });
        camera.intervals = Box::new(|_, size| match size {
            (640, 480) => Ok(rscam::IntervalInfo::Stepwise {
                min: (1, 30),
                max: (2, 15),
                step: (1, 1),
            }),
            (1280, 720) => Ok(rscam::IntervalInfo::Discretes(vec![
                (1, 15),
                (1, 30),
                (1, 30),
            ])),
            _ => Err(rscam::Error::BadInterval),
        });
        camera
    }

    #[test]
    fn every_format_size_and_rate_is_listed_with_a_camera_value_that_works() {
        let formats = describe(&webcam()).unwrap();
        let device = Device {
            path: PathBuf::from("/dev/video0"),
            name: Some("USB Camera".into()),
            formats: Ok(formats),
        };
        let text = render(&[device]);
        assert_eq!(
            text,
            "/dev/video0  USB Camera\n\
             \x20   MJPG (MJPG format): preferred: frames passed through untouched\n\
             \x20          640x480  30, 7.5 fps\n\
             \x20         1280x720  30, 15 fps\n\
             \x20        1920x1080  ? fps\n\
             \x20   YUYV (YUYV format): accepted: encoded to JPEG once per frame\n\
             \x20       any size from 160x120 to 1280x960 in steps of 16x8\n\
             \x20   H264 (H264 format): not used by porchlight\n\
             \x20       sizes unknown: Invalid or unsupported format of pixels\n\
             \x20   use: --camera v4l2:/dev/video0:1280x720@30\n"
        );
    }

    #[test]
    fn a_node_without_capture_formats_or_answers_is_explained() {
        use crate::camera::device::fake::FakeDevice;
        let codec = FakeDevice::offering(&[]);
        let mut broken = FakeDevice::offering(&[]);
        broken.formats = Err(libc::EIO);
        let devices = [
            Device {
                path: PathBuf::from("/dev/video10"),
                name: Some("bcm2835-codec-decode".into()),
                formats: describe(&codec),
            },
            Device {
                path: PathBuf::from("/dev/video11"),
                name: None,
                formats: describe(&broken),
            },
        ];
        let text = render(&devices);
        assert!(
            text.contains(
                "/dev/video10  bcm2835-codec-decode\n    no video capture formats (a metadata, \
                 codec or ISP node, not a camera)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("/dev/video11\n    cannot list formats: Input/output error"),
            "{text}"
        );
        assert!(!text.contains("use:"), "{text}");
    }

    #[test]
    fn a_camera_of_any_size_is_suggested_without_a_mode() {
        use crate::camera::device::fake::FakeDevice;
        let mut camera = FakeDevice::offering(&[b"YUYV"]);
        camera.sizes = Box::new(|_| {
            Ok(rscam::ResolutionInfo::Stepwise {
                min: (32, 32),
                max: (2592, 1944),
                step: (2, 2),
            })
        });
        let device = Device {
            path: PathBuf::from("/dev/video0"),
            name: None,
            formats: describe(&camera),
        };
        assert_eq!(suggestion(&device).as_deref(), Some("v4l2:/dev/video0"));
        // Only sizes above 720p: the smallest of them.
        let big = Device {
            path: PathBuf::from("/dev/video1"),
            name: None,
            formats: Ok(vec![Format {
                fourcc: "MJPG".into(),
                description: "Motion-JPEG".into(),
                sizes: Sizes::Discrete(vec![
                    ((2592, 1944), vec![15.0]),
                    ((1920, 1080), vec![30.0, 0.5]),
                ]),
            }]),
        };
        assert_eq!(
            suggestion(&big).as_deref(),
            Some("v4l2:/dev/video1:1920x1080@30")
        );
    }
}
