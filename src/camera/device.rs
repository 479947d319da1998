//! The V4L2 device behind one small trait: the seam between what porchlight decides about a
//! camera (which format, size and rate to ask for in `v4l2.rs`; what to list in `discover.rs`)
//! and the ioctls that ask it (rscam). The decisions are tested with a fake device; only the
//! implementation for `rscam::Camera` needs a camera.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use super::source::SourceError;

/// A pixel format a device offers.
#[derive(Clone, Debug, PartialEq)]
pub struct FormatInfo {
    /// FourCC, e.g. `MJPG`, `YUYV`.
    pub fourcc: [u8; 4],
    pub description: String,
}

/// What porchlight asks of a V4L2 capture device.
pub trait VideoDevice {
    /// The capture formats the device offers, in its order. `Err` when the device answers no
    /// V4L2 format query at all (ENOTTY: not a V4L2 device).
    fn formats(&self) -> io::Result<Vec<FormatInfo>>;
    /// The frame sizes offered for `format`.
    fn resolutions(&self, format: &[u8; 4]) -> rscam::Result<rscam::ResolutionInfo>;
    /// The frame intervals (seconds per frame, as a fraction) offered for `format` at `size`.
    fn intervals(&self, format: &[u8; 4], size: (u32, u32)) -> rscam::Result<rscam::IntervalInfo>;
    /// Sets the format, size and interval and starts streaming.
    fn start(&mut self, config: &rscam::Config) -> rscam::Result<()>;
}

impl VideoDevice for rscam::Camera {
    fn formats(&self) -> io::Result<Vec<FormatInfo>> {
        let mut formats = Vec::new();
        // rscam's iterator yields the same error forever (its index only advances on
        // success): stop at the first one.
        for info in rscam::Camera::formats(self) {
            let info = info?;
            formats.push(FormatInfo {
                fourcc: info.format,
                description: info.description,
            });
        }
        Ok(formats)
    }

    fn resolutions(&self, format: &[u8; 4]) -> rscam::Result<rscam::ResolutionInfo> {
        rscam::Camera::resolutions(self, format)
    }

    fn intervals(&self, format: &[u8; 4], size: (u32, u32)) -> rscam::Result<rscam::IntervalInfo> {
        rscam::Camera::intervals(self, format, size)
    }

    fn start(&mut self, config: &rscam::Config) -> rscam::Result<()> {
        rscam::Camera::start(self, config)
    }
}

/// Opens `path` as a V4L2 device. Something that is not a character device (a typo naming a
/// file or a directory) is refused before it is opened, with an error that says so.
pub fn open(path: &Path) -> Result<rscam::Camera, SourceError> {
    let name = path.display().to_string();
    let metadata = std::fs::metadata(path).map_err(|e| open_error(&name, &e))?;
    if !metadata.file_type().is_char_device() {
        let what = if metadata.is_dir() {
            "a directory"
        } else {
            "a regular file"
        };
        return Err(SourceError::new(
            io::ErrorKind::Unsupported,
            format!(
                "{name}: not a camera device ({what}); name one like /dev/video0 \
                 (`porchlight --list-cameras` lists them)"
            ),
        ));
    }
    rscam::Camera::new(&name).map_err(|e| open_error(&name, &e))
}

/// What a user should read when a device cannot be opened or asked, with the kind of problem
/// the capture thread compares (a node that answers no V4L2 ioctl is `Unsupported`).
pub fn open_error(device: &str, err: &io::Error) -> SourceError {
    let kind = if err.raw_os_error() == Some(libc::ENOTTY) {
        io::ErrorKind::Unsupported
    } else {
        err.kind()
    };
    SourceError::new(kind, open_error_text(device, err))
}

fn open_error_text(device: &str, err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::NotFound => format!(
            "{device}: no such device; is the camera plugged in? (`ls /dev/video*` lists cameras)"
        ),
        io::ErrorKind::PermissionDenied => format!(
            "{device}: permission denied; add the user running porchlight to the `video` group \
             (`sudo adduser $USER video`, then log in again)"
        ),
        _ if err.raw_os_error() == Some(libc::EBUSY) => {
            format!("{device}: busy; another program is using the camera")
        }
        _ if err.raw_os_error() == Some(libc::ENOTTY) => format!(
            "{device}: not a V4L2 device (it answers no video ioctl); name a camera like \
             /dev/video0 (`porchlight --list-cameras` lists them)"
        ),
        _ => format!("{device}: {err}"),
    }
}

/// A device that answers from closures, for the tests of the code above the ioctls.
#[cfg(test)]
pub mod fake {
    use super::*;

    type Sizes = Box<dyn Fn(&[u8; 4]) -> rscam::Result<rscam::ResolutionInfo>>;
    type Intervals = Box<dyn Fn(&[u8; 4], (u32, u32)) -> rscam::Result<rscam::IntervalInfo>>;
    type Start = Box<dyn FnMut(&Started) -> rscam::Result<()>>;

    /// What `start` was asked for: format, size, interval.
    pub type Started = ([u8; 4], (u32, u32), (u32, u32));

    pub struct FakeDevice {
        /// The formats, or the errno the format query fails with.
        pub formats: Result<Vec<&'static [u8; 4]>, i32>,
        pub sizes: Sizes,
        pub intervals: Intervals,
        pub start: Start,
        /// Every `start` call, in order.
        pub started: Vec<Started>,
    }

    impl FakeDevice {
        /// Offers `formats`, every size and rate refused with EINVAL; streams whatever it is
        /// asked for.
        pub fn offering(formats: &[&'static [u8; 4]]) -> FakeDevice {
            FakeDevice {
                formats: Ok(formats.to_vec()),
                sizes: Box::new(|_| {
                    Err(rscam::Error::Io(io::Error::from_raw_os_error(libc::EINVAL)))
                }),
                intervals: Box::new(|_, _| {
                    Err(rscam::Error::Io(io::Error::from_raw_os_error(libc::EINVAL)))
                }),
                start: Box::new(|_| Ok(())),
                started: Vec::new(),
            }
        }
    }

    impl VideoDevice for FakeDevice {
        fn formats(&self) -> io::Result<Vec<FormatInfo>> {
            match &self.formats {
                Ok(formats) => Ok(formats
                    .iter()
                    .map(|fourcc| FormatInfo {
                        fourcc: **fourcc,
                        description: format!("{} format", String::from_utf8_lossy(*fourcc)),
                    })
                    .collect()),
                Err(errno) => Err(io::Error::from_raw_os_error(*errno)),
            }
        }

        fn resolutions(&self, format: &[u8; 4]) -> rscam::Result<rscam::ResolutionInfo> {
            (self.sizes)(format)
        }

        fn intervals(
            &self,
            format: &[u8; 4],
            size: (u32, u32),
        ) -> rscam::Result<rscam::IntervalInfo> {
            (self.intervals)(format, size)
        }

        fn start(&mut self, config: &rscam::Config) -> rscam::Result<()> {
            let mut format = [0; 4];
            format.copy_from_slice(config.format);
            let started = (format, config.resolution, config.interval);
            self.started.push(started);
            (self.start)(&started)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_to_do() {
        let err = |kind| open_error("/dev/video0", &io::Error::from(kind)).message;
        assert!(err(io::ErrorKind::NotFound).contains("no such device; is the camera plugged in"));
        assert!(err(io::ErrorKind::PermissionDenied).contains("`video` group"));
        let os = |code| open_error("/dev/video0", &io::Error::from_raw_os_error(code));
        assert_eq!(
            os(libc::EBUSY),
            SourceError::new(
                io::ErrorKind::ResourceBusy,
                "/dev/video0: busy; another program is using the camera"
            )
        );
        let not_v4l2 = os(libc::ENOTTY);
        assert_eq!(not_v4l2.kind, io::ErrorKind::Unsupported);
        assert!(
            not_v4l2
                .message
                .starts_with("/dev/video0: not a V4L2 device")
        );
        assert!(os(libc::EIO).message.starts_with("/dev/video0: "));
    }

    #[test]
    fn a_file_or_directory_is_refused_unopened() {
        let dir = std::env::temp_dir().join(format!("porchlight-device-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("video0");
        std::fs::write(&file, "not a camera").unwrap();
        let err = open(&file).err().unwrap();
        assert!(
            err.message.contains("not a camera device (a regular file)"),
            "{err}"
        );
        assert_eq!(err.kind, io::ErrorKind::Unsupported);
        let err = open(&dir).err().unwrap();
        assert!(
            err.message.contains("not a camera device (a directory)"),
            "{err}"
        );
        let err = open(&dir.join("video9")).err().unwrap();
        assert!(err.message.contains("no such device"), "{err}");
        assert_eq!(err.kind, io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_character_device_that_is_not_v4l2_answers_no_format_query() {
        // /dev/null: a real character device that answers no V4L2 ioctl. rscam's own format
        // iterator would repeat its ENOTTY forever.
        let camera = open(Path::new("/dev/null")).expect("open /dev/null");
        let err = VideoDevice::formats(&camera).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY), "{err}");
    }
}
