//! What ffprobe says about a video file: its first video stream (size, depth, frame rate, colour tags,
//! rotation) and the other streams to copy. ffprobe's JSON is read with serde; unknown fields are
//! ignored since ffprobe adds fields from version to version.

use std::ffi::OsString;
use std::path::Path;

use serde::Deserialize;

use super::tools::{file_arg, Tool};
use crate::error::{Error, Result};

#[derive(Debug, Deserialize)]
struct ProbeJson {
    #[serde(default)]
    streams: Vec<StreamJson>,
    format: Option<FormatJson>,
}

#[derive(Debug, Deserialize)]
struct FormatJson {
    format_name: Option<String>,
    duration: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct StreamJson {
    index: usize,
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<usize>,
    height: Option<usize>,
    pix_fmt: Option<String>,
    bits_per_raw_sample: Option<String>,
    r_frame_rate: Option<String>,
    avg_frame_rate: Option<String>,
    time_base: Option<String>,
    nb_frames: Option<String>,
    duration: Option<String>,
    color_range: Option<String>,
    color_space: Option<String>,
    color_transfer: Option<String>,
    color_primaries: Option<String>,
    #[serde(default)]
    side_data_list: Vec<serde_json::Value>,
    #[serde(default)]
    tags: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    disposition: std::collections::BTreeMap<String, i64>,
}

/// A rational number (frame rates, time bases), as ffprobe writes them ("30000/1001").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rational {
    /// Numerator.
    pub num: u64,
    /// Denominator.
    pub den: u64,
}

impl Rational {
    /// "N/D" (or a whole number); None for 0/0 or anything else.
    pub fn parse(s: &str) -> Option<Rational> {
        let (n, d) = s.split_once('/').unwrap_or((s, "1"));
        let (num, den) = (n.trim().parse().ok()?, d.trim().parse().ok()?);
        (num > 0 && den > 0).then_some(Rational { num, den })
    }

    /// As a float.
    pub fn value(self) -> f64 {
        self.num as f64 / self.den as f64
    }
}

impl std::fmt::Display for Rational {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

/// A stream other than the video: what to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherStream {
    /// Its index in the file.
    pub index: usize,
    /// audio, subtitle, data or attachment.
    pub kind: String,
    /// Its codec.
    pub codec: String,
}

/// The video stream to restore and what the output keeps of it.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    /// Its index in the file.
    pub index: usize,
    /// The codec.
    pub codec: String,
    /// Frame width as decoded, before rotation.
    pub width: usize,
    /// Frame height as decoded, before rotation.
    pub height: usize,
    /// More than 8 bits per sample: decoded as 16-bit RGB.
    pub deep: bool,
    /// The frame rate (r_frame_rate).
    pub rate: Rational,
    /// The average frame rate; differs from `rate` for variable frame rates.
    pub avg_rate: Option<Rational>,
    /// The stream's time base.
    pub time_base: Option<Rational>,
    /// Frames, where the container says.
    pub frames: Option<u64>,
    /// Duration in seconds, where known.
    pub duration: Option<f64>,
    /// Colour tags as ffmpeg names them (tv/pc, bt709, …), None where unknown.
    pub range: Option<String>,
    /// The matrix.
    pub matrix: Option<String>,
    /// The transfer function.
    pub transfer: Option<String>,
    /// The primaries.
    pub primaries: Option<String>,
    /// Display rotation in degrees (counter-clockwise, as ffprobe reports it): ffmpeg decodes frames
    /// upright, so the restored frames need no rotation flag.
    pub rotation: i64,
    /// The packets' timestamps are unevenly spaced (read from the file: Matroska reports the same base and
    /// average rate for a variable frame rate).
    pub uneven: bool,
}

impl VideoInfo {
    /// The frame size as decoded (rotation applied): (height, width).
    pub fn upright_size(&self) -> (usize, usize) {
        if self.rotation.rem_euclid(180) == 90 {
            (self.width, self.height)
        } else {
            (self.height, self.width)
        }
    }

    /// Whether timestamps are not at a constant rate: the packets' spacing varies, or the average rate
    /// differs from the base rate.
    pub fn variable_rate(&self) -> bool {
        self.uneven || self.avg_rate.is_some_and(|a| a != self.rate)
    }
}

/// What ffprobe found in a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The first video stream (cover art excluded).
    pub video: VideoInfo,
    /// The other streams.
    pub others: Vec<OtherStream>,
    /// The container's format names.
    pub container: String,
}

fn known(v: &Option<String>) -> Option<String> {
    v.clone().filter(|s| !s.is_empty() && s != "unknown" && s != "reserved")
}

/// Probe `path`: an input error when ffprobe cannot read it (not a media file, truncated) or it has no
/// video stream.
pub fn probe(path: &Path) -> Result<Probe> {
    let json = ffprobe(
        path,
        &["-show_streams", "-show_format", "-of", "json"],
        Some(PROBE_LIMIT),
    )?;
    let mut probe = parse(path, &json)?;
    probe.video.uneven = uneven(&packet_times(path, probe.video.index)?);
    Ok(probe)
}

/// ffprobe's standard output for the file `path` with `args` before it; past `limit` it is killed. A
/// failure is an input error naming the file, with ffprobe's last line.
pub fn ffprobe(path: &Path, args: &[&str], limit: Option<std::time::Duration>) -> Result<Vec<u8>> {
    let mut all: Vec<OsString> = args.iter().map(OsString::from).collect();
    all.push(file_arg(path));
    Tool::Ffprobe.output(all, limit, |line| {
        Error::input(path, format!("ffprobe cannot read it: {line}"))
    })
}

/// The integers of ffprobe's `csv=p=0` output, one a line (lines without one are skipped).
pub fn csv_integers(out: &[u8]) -> Vec<i64> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse::<i64>().ok())
        .collect()
}

/// Packets read to tell a variable frame rate.
const RATE_PACKETS: usize = 2000;

/// The presentation timestamps of the first packets of stream `index`, in its time base (demuxed, not
/// decoded).
fn packet_times(path: &Path, index: usize) -> Result<Vec<i64>> {
    let (stream, interval) = (index.to_string(), format!("%+#{RATE_PACKETS}"));
    let args = [
        "-select_streams",
        &stream,
        "-read_intervals",
        &interval,
        "-show_entries",
        "packet=pts",
    ];
    let out = ffprobe(path, &[&args[..], &["-of", "csv=p=0"]].concat(), Some(PROBE_LIMIT))?;
    Ok(csv_integers(&out))
}

/// Whether timestamps (in any order) are unevenly spaced: the gaps between neighbours differ by more than a
/// tick and 1 % of the mean gap (a time base in milliseconds rounds 24 fps to gaps of 41 and 42).
fn uneven(times: &[i64]) -> bool {
    let mut t = times.to_vec();
    t.sort_unstable();
    t.dedup();
    let gaps: Vec<i64> = t.windows(2).map(|w| w[1] - w[0]).collect();
    let (Some(lo), Some(hi)) = (gaps.iter().min(), gaps.iter().max()) else {
        return false;
    };
    let mean = gaps.iter().sum::<i64>() as f64 / gaps.len() as f64;
    (hi - lo) as f64 > 1.0 + 0.01 * mean
}

/// How long reading a file's streams may take: a regular file answers in well under a second.
const PROBE_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The packets of `path`'s first video stream, counted by demuxing it (no decoding): what a written file
/// really holds, whatever the encoder's exit status said.
pub fn video_packets(path: &Path) -> Result<u64> {
    let args = [
        "-select_streams",
        "v:0",
        "-count_packets",
        "-show_entries",
        "stream=nb_read_packets",
    ];
    let out = ffprobe(path, &[&args[..], &["-of", "csv=p=0"]].concat(), None)?;
    let count = csv_integers(&out).first().and_then(|&n| u64::try_from(n).ok());
    count.ok_or_else(|| Error::input(path, "ffprobe finds no video stream in it"))
}

/// ffprobe's JSON for `path`.
fn parse(path: &Path, json: &[u8]) -> Result<Probe> {
    let p: ProbeJson = serde_json::from_slice(json)
        .map_err(|e| Tool::Ffprobe.failed(&format!("unexpected output for {}: {e}", path.display())))?;
    let is_video = |s: &&StreamJson| {
        s.codec_type.as_deref() == Some("video") && s.disposition.get("attached_pic").copied().unwrap_or(0) == 0
    };
    let Some(v) = p.streams.iter().find(is_video) else {
        return Err(Error::input(path, "it has no video stream"));
    };
    let (Some(width), Some(height)) = (v.width.filter(|w| *w > 0), v.height.filter(|h| *h > 0)) else {
        return Err(Error::input(path, "its video stream has no frame size"));
    };
    let rate = v
        .r_frame_rate
        .as_deref()
        .and_then(Rational::parse)
        .or_else(|| v.avg_frame_rate.as_deref().and_then(Rational::parse))
        .ok_or_else(|| Error::input(path, "its video stream has no frame rate"))?;
    let bits = v
        .bits_per_raw_sample
        .as_deref()
        .and_then(|b| b.parse::<u32>().ok())
        .unwrap_or_else(|| pix_fmt_bits(v.pix_fmt.as_deref().unwrap_or("")));
    let rotation = v
        .side_data_list
        .iter()
        .find_map(|d| d.get("rotation").and_then(|r| r.as_f64()))
        .map(|r| r.round() as i64)
        .or_else(|| v.tags.get("rotate").and_then(|r| r.parse::<i64>().ok()).map(|r| -r))
        .unwrap_or(0);
    let video = VideoInfo {
        index: v.index,
        codec: v.codec_name.clone().unwrap_or_default(),
        width,
        height,
        deep: bits > 8,
        rate,
        avg_rate: v.avg_frame_rate.as_deref().and_then(Rational::parse),
        time_base: v.time_base.as_deref().and_then(Rational::parse),
        frames: v.nb_frames.as_deref().and_then(|n| n.parse().ok()).filter(|n| *n > 0),
        // Matroska gives the duration of the file only.
        duration: v
            .duration
            .as_deref()
            .or(p.format.as_ref().and_then(|f| f.duration.as_deref()))
            .and_then(|d| d.parse().ok()),
        range: known(&v.color_range),
        matrix: known(&v.color_space),
        transfer: known(&v.color_transfer),
        primaries: known(&v.color_primaries),
        rotation,
        uneven: false,
    };
    let others = p
        .streams
        .iter()
        .filter(|s| s.index != v.index)
        .map(|s| OtherStream {
            index: s.index,
            kind: s.codec_type.clone().unwrap_or_default(),
            codec: s.codec_name.clone().unwrap_or_default(),
        })
        .collect();
    Ok(Probe {
        video,
        others,
        container: p.format.and_then(|f| f.format_name).unwrap_or_default(),
    })
}

/// Bits per sample a pixel format name implies (yuv420p10le → 10), 8 where it names none.
fn pix_fmt_bits(fmt: &str) -> u32 {
    let digits: String = fmt
        .trim_end_matches("le")
        .trim_end_matches("be")
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    match digits.parse::<u32>() {
        Ok(b @ 9..=16) if !fmt.starts_with("rgb") && !fmt.starts_with("bgr") => b,
        Ok(48 | 64) => 16,
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ffprobe 5.1's JSON for a rotated 10-bit phone clip with audio, subtitles and cover art.
    #[test]
    fn reads_ffprobe_json() {
        let json = br#"{"streams": [
          {"index": 0, "codec_type": "video", "codec_name": "mjpeg", "width": 10, "height": 10,
           "disposition": {"attached_pic": 1}},
          {"index": 1, "codec_type": "video", "codec_name": "hevc", "width": 1920, "height": 1080,
           "pix_fmt": "yuv420p10le", "r_frame_rate": "30000/1001", "avg_frame_rate": "30000/1001",
           "time_base": "1/90000", "nb_frames": "300", "color_range": "tv", "color_space": "bt2020nc",
           "color_transfer": "arib-std-b67", "color_primaries": "bt2020",
           "side_data_list": [{"side_data_type": "Display Matrix", "rotation": -90}],
           "disposition": {"attached_pic": 0}},
          {"index": 2, "codec_type": "audio", "codec_name": "aac"},
          {"index": 3, "codec_type": "subtitle", "codec_name": "mov_text"}
        ], "format": {"format_name": "mov,mp4,m4a,3gp,3g2,mj2"}}"#;
        let p = parse(Path::new("clip.mov"), json).unwrap();
        assert_eq!(p.video.index, 1);
        assert!(p.video.deep);
        assert_eq!(p.video.rate, Rational { num: 30000, den: 1001 });
        assert!(!p.video.variable_rate());
        // Packet spacing: 24 fps in milliseconds (41/42) is even, B-frame order is no matter, a gap is not.
        assert!(!uneven(&[0, 42, 83, 125, 167, 208, 250]));
        assert!(!uneven(&[0, 83, 42, 167, 125]));
        assert!(uneven(&[0, 42, 83, 383, 425]));
        assert!(!uneven(&[]) && !uneven(&[5]));
        assert_eq!(p.video.frames, Some(300));
        assert_eq!(p.video.rotation, -90);
        assert_eq!(p.video.upright_size(), (1920, 1080));
        assert_eq!(p.video.matrix.as_deref(), Some("bt2020nc"));
        assert_eq!(
            p.others.iter().map(|o| o.kind.as_str()).collect::<Vec<_>>(),
            ["video", "audio", "subtitle"]
        );
        let audio_only = br#"{"streams": [{"index": 0, "codec_type": "audio", "codec_name": "flac"}], "format": {}}"#;
        let e = parse(Path::new("song.flac"), audio_only).unwrap_err();
        assert_eq!(e.to_string(), "song.flac: it has no video stream");
    }

    #[test]
    fn pixel_format_depths() {
        assert_eq!(pix_fmt_bits("yuv420p"), 8);
        assert_eq!(pix_fmt_bits("yuv420p10le"), 10);
        assert_eq!(pix_fmt_bits("p010le"), 10);
        assert_eq!(pix_fmt_bits("rgb48le"), 16);
        assert_eq!(pix_fmt_bits("gray12le"), 12);
        assert_eq!(Rational::parse("0/0"), None);
        assert_eq!(Rational::parse("25"), Some(Rational { num: 25, den: 1 }));
    }
}
