//! `file:PATH[@FPS]`: replays a directory of .jpg files (in name order) or one .mjpeg file
//! (concatenated JPEGs), in a loop, at a fixed rate. Frames are read from disk as they are
//! needed, never all held in memory, so a long clip costs what one frame costs.

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::source::{Captured, Mode, Source, SourceError};
use crate::video::jpeg;
use crate::video::rate::Ticker;

/// Largest frame accepted from an .mjpeg file: past this without a complete JPEG, the bytes are
/// not MJPEG.
const MAX_FRAME_BYTES: usize = 16 << 20;
const READ_CHUNK: usize = 256 << 10;

enum Frames {
    Directory { files: Vec<PathBuf>, next: usize },
    Mjpeg(MjpegReader),
}

pub struct FileSource {
    frames: Frames,
    mode: Mode,
    ticker: Ticker,
}

impl FileSource {
    pub fn open(path: &Path, fps: u32) -> Result<FileSource, SourceError> {
        let shown = path.display();
        let meta = std::fs::metadata(path).map_err(|e| SourceError::io(&shown.to_string(), &e))?;
        let mut frames = if meta.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| SourceError::io(&shown.to_string(), &e))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg")
                    })
                })
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(SourceError::new(
                    ErrorKind::NotFound,
                    format!("{shown}: the directory holds no .jpg or .jpeg files"),
                ));
            }
            Frames::Directory { files, next: 0 }
        } else {
            Frames::Mjpeg(MjpegReader::open(path)?)
        };
        // The first readable frame tells the size; reading it also proves the source works.
        let first = frames.next_jpeg()?;
        let (width, height) = jpeg::probe_size(&first).ok_or_else(|| {
            SourceError::new(
                ErrorKind::InvalidData,
                format!("{shown}: the first frame is not a readable JPEG"),
            )
        })?;
        frames.rewind()?;
        Ok(FileSource {
            frames,
            mode: Mode { width, height, fps },
            ticker: Ticker::new(fps),
        })
    }
}

impl Frames {
    /// The next frame's bytes, looping at the end. Unreadable files are skipped; an error only
    /// when a whole pass finds nothing.
    fn next_jpeg(&mut self) -> Result<Vec<u8>, SourceError> {
        match self {
            Frames::Directory { files, next } => {
                for _ in 0..files.len() {
                    let path = &files[*next % files.len()];
                    *next = (*next + 1) % files.len();
                    match std::fs::read(path) {
                        Ok(bytes) if jpeg::probe_size(&bytes).is_some() => return Ok(bytes),
                        Ok(_) => log::debug!("{}: not a JPEG, skipped", path.display()),
                        Err(err) => log::debug!("{}: {err}, skipped", path.display()),
                    }
                }
                Err(SourceError::new(
                    ErrorKind::InvalidData,
                    "none of the .jpg files could be read as JPEG",
                ))
            }
            Frames::Mjpeg(reader) => reader.next_frame(),
        }
    }

    fn rewind(&mut self) -> Result<(), SourceError> {
        match self {
            Frames::Directory { next, .. } => {
                *next = 0;
                Ok(())
            }
            Frames::Mjpeg(reader) => reader.rewind(),
        }
    }
}

impl Source for FileSource {
    fn mode(&self) -> Mode {
        self.mode
    }

    fn next_frame(
        &mut self,
        _number: u64,
        timeout: Duration,
    ) -> Result<Option<Captured>, SourceError> {
        let Some(missed) = self.ticker.wait(timeout) else {
            return Ok(None);
        };
        let captured_at = Instant::now();
        let captured_unix = crate::clock::unix_now();
        let jpeg = self.frames.next_jpeg()?;
        let (width, height) =
            jpeg::probe_size(&jpeg).unwrap_or((self.mode.width, self.mode.height));
        Ok(Some(Captured {
            jpeg,
            width,
            height,
            captured_unix,
            captured_at,
            missed,
        }))
    }
}

/// Reads the JPEGs of an .mjpeg file one at a time, looping.
struct MjpegReader {
    path: PathBuf,
    file: File,
    pending: Vec<u8>,
    /// Complete frames found in the last read, oldest first.
    ready: std::collections::VecDeque<Vec<u8>>,
    /// Whether the current pass through the file found any frame.
    found_in_pass: bool,
}

impl MjpegReader {
    fn open(path: &Path) -> Result<MjpegReader, SourceError> {
        let file =
            File::open(path).map_err(|e| SourceError::io(&path.display().to_string(), &e))?;
        Ok(MjpegReader {
            path: path.to_path_buf(),
            file,
            pending: Vec::new(),
            ready: Default::default(),
            found_in_pass: false,
        })
    }

    fn rewind(&mut self) -> Result<(), SourceError> {
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|e| SourceError::io(&self.path.display().to_string(), &e))?;
        self.pending.clear();
        self.ready.clear();
        self.found_in_pass = false;
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Vec<u8>, SourceError> {
        let shown = self.path.display().to_string();
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Ok(frame);
            }
            let start = self.pending.len();
            self.pending.resize(start + READ_CHUNK, 0);
            let read = self
                .file
                .read(&mut self.pending[start..])
                .map_err(|e| SourceError::io(&shown, &e))?;
            self.pending.truncate(start + read);
            if read == 0 {
                if !self.found_in_pass {
                    return Err(SourceError::new(
                        ErrorKind::InvalidData,
                        format!("{shown}: no complete JPEG frame in the file"),
                    ));
                }
                self.rewind()?;
                continue;
            }
            let (frames, used) = jpeg::split_frames(&self.pending);
            self.found_in_pass |= !frames.is_empty();
            self.ready
                .extend(frames.into_iter().map(|r| self.pending[r].to_vec()));
            self.pending.drain(..used);
            if self.pending.len() > MAX_FRAME_BYTES {
                return Err(SourceError::new(
                    ErrorKind::InvalidData,
                    format!(
                        "{shown}: no complete JPEG in {} MiB; is it an MJPEG file?",
                        MAX_FRAME_BYTES >> 20
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::jpeg::{Image, Layout};

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "porchlight-unit-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn jpeg_of(shade: u8) -> Vec<u8> {
        jpeg::encode(&Image::filled(48, 32, Layout::Ycbcr, [shade, 128, 128]), 80).unwrap()
    }

    fn collect(source: &mut FileSource, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                source
                    .next_frame(i as u64, Duration::from_secs(1))
                    .unwrap()
                    .expect("a frame")
                    .jpeg
            })
            .collect()
    }

    #[test]
    fn a_directory_plays_in_name_order_and_loops() {
        let dir = temp_dir("dir");
        let frames: Vec<Vec<u8>> = (0..3).map(|i| jpeg_of(40 + i * 60)).collect();
        for (i, frame) in frames.iter().enumerate() {
            std::fs::write(dir.join(format!("{i:03}.jpg")), frame).unwrap();
        }
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let mut source = FileSource::open(&dir, 60).unwrap();
        assert_eq!((source.mode().width, source.mode().height), (48, 32));
        let got = collect(&mut source, 7);
        for (i, frame) in got.iter().enumerate() {
            assert_eq!(frame, &frames[i % 3], "frame {i}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_mjpeg_file_plays_and_loops() {
        let dir = temp_dir("mjpeg");
        let frames: Vec<Vec<u8>> = (0..4).map(|i| jpeg_of(30 + i * 50)).collect();
        let path = dir.join("clip.mjpeg");
        std::fs::write(&path, frames.concat()).unwrap();
        let mut source = FileSource::open(&path, 60).unwrap();
        let got = collect(&mut source, 9);
        for (i, frame) in got.iter().enumerate() {
            assert_eq!(frame, &frames[i % 4], "frame {i}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn clear_errors_for_nothing_to_play() {
        let dir = temp_dir("empty");
        let err = FileSource::open(&dir, 15).err().unwrap();
        assert!(err.message.contains("no .jpg"), "{err}");
        let junk = dir.join("junk.mjpeg");
        std::fs::write(&junk, b"this is not video").unwrap();
        let err = FileSource::open(&junk, 15).err().unwrap();
        assert!(err.message.contains("no complete JPEG"), "{err}");
        assert_eq!(err.kind, ErrorKind::InvalidData);
        let err = FileSource::open(&dir.join("missing"), 15).err().unwrap();
        assert!(err.message.contains("missing"), "{err}");
        assert_eq!(err.kind, ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
