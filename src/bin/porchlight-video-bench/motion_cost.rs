//! `--motion-cost FILE`: prints what `porchlight::measure_motion_cost` measured (the motion
//! thread's luma decode, grid and detector per frame, in-process; see `src/motion/cost.rs`).

use serde_json::Value;

pub fn run(path: &str, frames: usize, motion_fps: f64) -> Result<Value, String> {
    porchlight::measure_motion_cost(path, frames, motion_fps)
}

pub fn print(r: &Value) {
    let num = |key: &str, digits: usize| {
        r[key]
            .as_f64()
            .map_or("-".to_string(), |x| format!("{x:.digits$}"))
    };
    println!(
        "{} ({}x{}, {} frames, {} KB each on average), thread CPU time per frame:",
        r["file"].as_str().unwrap_or(""),
        r["size"][0],
        r["size"][1],
        r["frames"],
        num("jpeg_kb_mean", 1)
    );
    println!(
        "  luma decode {} ms (a colour decode: {} ms), grid {} ms, detector {} ms (motion apart \
         from decoding: {} ms)",
        num("decode_ms_per_frame", 3),
        num("colour_decode_ms_per_frame", 3),
        num("grid_ms_per_frame", 3),
        num("detector_ms_per_frame", 3),
        num("motion_ms_per_frame", 3)
    );
    println!(
        "  at motion_fps {}: {} % of one core with nobody watching (decode + motion), {} % when a \
         viewer's encoder has decoded the frame already; {} decision(s)",
        num("motion_fps", 1),
        num("core_percent_nobody_watching", 2),
        num("core_percent_decode_shared", 2),
        r["decisions"]
    );
}
