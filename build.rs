//! Embeds the dashboard (`www/`) in the binary, so copying the one file to a device is enough.
//! Generates a table of (URL path, gzip member) that `src/http/static_files.rs` serves: each
//! file is gzip-compressed here, at the highest level, so the binary carries 24 KB instead of
//! 61 KB and browsers are sent the compressed bytes as they are (`src/http/gzip.rs` unpacks
//! them for a client that does not accept gzip).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("www");
    println!("cargo:rerun-if-changed=www");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let mut table = String::from("pub static EMBEDDED: &[(&str, &[u8])] = &[\n");
    for (index, file) in files.iter().enumerate() {
        println!("cargo:rerun-if-changed={}", file.display());
        let url = file
            .strip_prefix(&root)
            .expect("under www")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let bytes = std::fs::read(file).expect("read a www file");
        let packed = out_dir.join(format!("www-{index}.gz"));
        std::fs::write(&packed, gzip(&bytes)).expect("write a compressed www file");
        writeln!(
            table,
            "    ({:?}, include_bytes!({:?})),",
            format!("/{url}"),
            packed.display().to_string()
        )
        .expect("write to string");
    }
    table.push_str("];\n");
    std::fs::write(out_dir.join("www_embedded.rs"), table).expect("write embedded table");
}

/// A gzip member (RFC 1952) of `data`: a header without a name or time (the build stays
/// reproducible), DEFLATE at miniz's highest level, CRC-32 and length.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut member = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3];
    member.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(data, 10));
    member.extend_from_slice(&crc32(data).to_le_bytes());
    let size = u32::try_from(data.len()).expect("a www file under 4 GiB");
    member.extend_from_slice(&size.to_le_bytes());
    member
}

/// CRC-32 (the IEEE polynomial, reflected), bit by bit: a build step on 61 KB needs no table.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
