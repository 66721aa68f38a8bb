//! The ffmpeg command line of an encode: raw RGB frames on standard input, the source's audio and subtitles
//! mapped and copied (or converted where the container cannot hold them), the codec and quality the
//! container and options call for, the colour tags, and a timestamp table for variable frame rates.

use std::ffi::OsString;
use std::path::Path;

use super::probe::{Probe, Rational, VideoInfo};
use super::source::Window;
use super::tools::file_arg;

/// The containers a video output may be, by extension.
pub const CONTAINERS: [&str; 4] = ["mp4", "mkv", "mov", "webm"];

/// How the video is compressed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Encoding {
    /// The ffmpeg encoder. Default: None (libx264 for mp4, mkv and mov; libvpx-vp9 for webm; lossless:
    /// FFV1 in mkv, libx264rgb in mp4 and mov, VP9 lossless in webm).
    pub codec: Option<String>,
    /// Constant quality (the encoder's CRF scale). Default: None (18 for x264/x265, 24 for VP9).
    pub crf: Option<u8>,
    /// Lossless RGB. Default: false.
    pub lossless: bool,
}

/// What an encoder needs to know of the source.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// The output's container (one of [`CONTAINERS`]).
    pub container: &'a str,
    /// The restored frame size (height, width).
    pub size: (usize, usize),
    /// Whether frames are 16-bit.
    pub deep: bool,
    /// The frame rate.
    pub rate: Rational,
    /// The source file's streams, to copy audio and subtitles from (None for a folder of frames).
    pub source: Option<(&'a Path, &'a Probe)>,
    /// The part of the source restored.
    pub window: Window,
    /// Frame timestamps in ticks of the source's time base from the first, for variable frame rates (None:
    /// constant `rate`).
    pub timestamps: Option<&'a [i64]>,
}

/// ffmpeg's colour matrix name as swscale's scale filter calls it.
fn scale_matrix(m: &str) -> Option<&'static str> {
    Some(match m {
        "bt709" => "bt709",
        "fcc" => "fcc",
        "bt470bg" | "smpte170m" => "bt601",
        "smpte240m" => "smpte240m",
        "bt2020nc" | "bt2020c" => "bt2020",
        _ => return None,
    })
}

/// A balanced ffmpeg expression giving frame N its timestamp (in ticks of the time base), for frames
/// `lo..hi` (for `setpts`): a binary search, so each frame costs log2(frames) comparisons.
fn timestamp_expression(ts: &[i64], lo: usize, hi: usize) -> String {
    if hi <= lo + 1 {
        return ts.get(lo).copied().unwrap_or(0).to_string();
    }
    let mid = (lo + hi) / 2;
    format!(
        "if(lt(N,{mid}),{},{})",
        timestamp_expression(ts, lo, mid),
        timestamp_expression(ts, mid, hi)
    )
}

/// Where an encode's filters go: on the command line, or in a script file (a variable frame rate's
/// timestamp table can be long).
#[derive(Debug, Clone, Copy)]
pub enum Filters<'a> {
    /// `-vf` with this chain (none where empty).
    Inline(&'a str),
    /// `-filter_script:v` with this file, which holds [`encoder_filters`].
    Script(&'a Path),
}

/// The video encoder, its pixel format and its quality arguments for the container and options.
fn video_codec(t: &Target<'_>, enc: &Encoding) -> (String, &'static str, Vec<String>) {
    let default = match (enc.lossless, t.container) {
        (true, "mkv") => "ffv1",
        (true, "webm") | (false, "webm") => "libvpx-vp9",
        (true, _) => "libx264rgb",
        (false, _) => "libx264",
    };
    let codec = enc.codec.clone().unwrap_or_else(|| default.into());
    let vp9 = codec.contains("vpx");
    let (pix_fmt, quality): (&str, Vec<String>) = match (enc.lossless, t.container) {
        (true, "mkv") => (if t.deep { "gbrp16le" } else { "bgr0" }, vec![]),
        (true, "webm") => (
            if t.deep { "gbrp10le" } else { "gbrp" },
            vec!["-lossless".into(), "1".into()],
        ),
        (true, _) => ("rgb24", vec!["-qp".into(), "0".into()]),
        (false, _) => {
            let crf = enc.crf.unwrap_or(if vp9 { 24 } else { 18 });
            let mut q = vec!["-crf".into(), crf.to_string()];
            if vp9 {
                q.extend(["-b:v".into(), "0".into()]);
            }
            (if t.deep { "yuv420p10le" } else { "yuv420p" }, q)
        }
    };
    (codec, pix_fmt, quality)
}

/// Whether the encoder is given RGB (lossless): no Y'CbCr matrix or range then.
fn rgb_out(pix_fmt: &str) -> bool {
    ["gbr", "bgr", "rgb"].iter().any(|p| pix_fmt.starts_with(p))
}

/// The source's time base (90 kHz where it has none): the ticks of a variable frame rate's timestamps.
fn time_base(t: &Target<'_>) -> Rational {
    t.source
        .and_then(|(_, p)| p.video.time_base)
        .unwrap_or(Rational { num: 1, den: 90000 })
}

/// The encoder's arguments after the program name: raw frames on standard input, the source's other
/// streams, the codec, the colour tags, the filters and the output file.
pub fn encoder_args(t: &Target<'_>, enc: &Encoding, output: &Path, filters: Filters<'_>) -> Vec<OsString> {
    let (h, w) = t.size;
    let mut a: Vec<OsString> = [
        "-f",
        "rawvideo",
        "-pix_fmt",
        if t.deep { "rgb48le" } else { "rgb24" },
        "-s",
        &format!("{w}x{h}"),
        "-framerate",
        &t.rate.to_string(),
        "-i",
        "pipe:0",
    ]
    .map(OsString::from)
    .into();
    let mut maps = vec!["-map".to_string(), "0:v:0".into()];
    let mut stream_args: Vec<String> = vec![];
    if let Some((path, probe)) = t.source {
        a.extend(t.window.args().into_iter().map(OsString::from));
        a.push("-i".into());
        a.push(file_arg(path));
        let (mut audio, mut subs) = (0, 0);
        for s in &probe.others {
            let codec = match s.kind.as_str() {
                "audio" => Some(audio_codec(t.container, &s.codec)),
                "subtitle" => subtitle_codec(t.container, &s.codec),
                _ => None,
            };
            let Some(codec) = codec else { continue };
            maps.extend(["-map".into(), format!("1:{}", s.index)]);
            let counter = if s.kind == "audio" { &mut audio } else { &mut subs };
            stream_args.extend([format!("-c:{}:{counter}", &s.kind[..1]), codec.into()]);
            *counter += 1;
        }
    }
    a.extend(maps.into_iter().map(OsString::from));
    let (codec, pix_fmt, quality) = video_codec(t, enc);
    a.extend(["-c:v", codec.as_str(), "-pix_fmt", pix_fmt].map(OsString::from));
    a.extend(quality.into_iter().map(OsString::from));
    let video = t.source.map(|(_, p)| &p.video);
    a.extend(colour(video, h, rgb_out(pix_fmt)).0.into_iter().map(OsString::from));
    if t.timestamps.is_some() {
        // Each frame at its own time: no frames dropped or repeated, and the encoder counts in the source's
        // time base (its default, one frame period, would round the times to the average rate).
        let tb = time_base(t).to_string();
        a.extend(["-fps_mode", "passthrough", "-enc_time_base:v", &tb].map(OsString::from));
    }
    a.extend(stream_args.into_iter().map(OsString::from));
    if t.container == "mp4" || t.container == "mov" {
        a.extend(["-movflags", "+faststart"].map(OsString::from));
    }
    match filters {
        Filters::Inline("") => {}
        Filters::Inline(chain) => a.extend(["-vf", chain].map(OsString::from)),
        Filters::Script(path) => {
            a.push("-filter_script:v".into());
            a.push(file_arg(path));
        }
    }
    let format = match t.container {
        "mkv" => "matroska",
        other => other,
    };
    a.extend(["-f", format, "-y"].map(OsString::from));
    a.push(file_arg(output));
    a
}

/// An audio stream's codec in `container`: copied, unless the container cannot hold it (Opus for WebM,
/// AAC for PCM in MP4).
fn audio_codec(container: &str, codec: &str) -> &'static str {
    match container {
        "webm" if !matches!(codec, "opus" | "vorbis") => "libopus",
        "mp4" if codec.starts_with("pcm_") => "aac",
        _ => "copy",
    }
}

/// A subtitle stream's codec in `container`: copied or converted to the container's text kind; None
/// (left out) for bitmap subtitles outside Matroska.
fn subtitle_codec(container: &str, codec: &str) -> Option<&'static str> {
    let text = matches!(codec, "subrip" | "ass" | "ssa" | "mov_text" | "webvtt" | "text");
    match container {
        "mkv" if codec == "mov_text" => Some("srt"),
        "mkv" => Some("copy"),
        "mp4" | "mov" if text => Some("mov_text"),
        "webm" if text => Some("webvtt"),
        _ => None,
    }
}

/// The filter chain of an encode: the timestamp table for a variable frame rate, and the RGB → Y'CbCr
/// conversion in the matrix and range of the colour tags (swscale would use BT.601 in limited range
/// otherwise). Empty where there is nothing to do.
pub fn encoder_filters(t: &Target<'_>, enc: &Encoding) -> String {
    let mut filters = vec![];
    if let Some(ts) = t.timestamps {
        filters.push(format!("settb={}", time_base(t)));
        filters.push(format!("setpts='{}'", timestamp_expression(ts, 0, ts.len())));
    }
    let (_, pix_fmt, _) = video_codec(t, enc);
    filters.extend(colour(t.source.map(|(_, p)| &p.video), t.size.0, rgb_out(pix_fmt)).1);
    filters.join(",")
}

/// The colour tag arguments, and the scale filter whose conversion matches them (None for RGB output).
fn colour(v: Option<&VideoInfo>, height: usize, rgb_out: bool) -> (Vec<String>, Option<String>) {
    let mut tags = vec![];
    let mut tag = |flag: &str, value: &str| tags.extend([flag.to_string(), value.to_string()]);
    if let Some(p) = v.and_then(|v| v.primaries.as_deref()) {
        tag("-color_primaries", p);
    }
    if let Some(t) = v.and_then(|v| v.transfer.as_deref()) {
        tag("-color_trc", t);
    }
    if rgb_out {
        return (tags, None);
    }
    // The source's matrix and range where it is Y'CbCr; for an RGB source (or none) the usual choice for
    // the output's height (BT.709 from 720 lines, else BT.601) in limited range, tagged so players agree.
    let (matrix, range) = match v
        .and_then(|v| v.matrix.as_deref().zip(Some(v.range.as_deref())))
        .filter(|(m, _)| scale_matrix(m).is_some())
    {
        Some((m, r)) => (m, r.unwrap_or("tv")),
        None => (if height >= 720 { "bt709" } else { "smpte170m" }, "tv"),
    };
    tag("-colorspace", matrix);
    tag("-color_range", range);
    let m = scale_matrix(matrix).unwrap_or("bt601");
    let r = if range == "pc" { "full" } else { "limited" };
    (tags, Some(format!("scale=out_color_matrix={m}:out_range={r}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::probe::OtherStream;

    fn probe(matrix: Option<&str>, others: &[(&str, &str)]) -> Probe {
        Probe {
            video: VideoInfo {
                index: 0,
                codec: "h264".into(),
                width: 320,
                height: 180,
                deep: false,
                rate: Rational { num: 24, den: 1 },
                avg_rate: None,
                time_base: Some(Rational { num: 1, den: 12288 }),
                frames: Some(12),
                duration: None,
                range: Some("tv".into()),
                matrix: matrix.map(String::from),
                transfer: Some("bt709".into()),
                primaries: Some("bt709".into()),
                rotation: 0,
                uneven: false,
            },
            others: others
                .iter()
                .enumerate()
                .map(|(i, (kind, codec))| OtherStream {
                    index: i + 1,
                    kind: kind.to_string(),
                    codec: codec.to_string(),
                })
                .collect(),
            container: "mov,mp4".into(),
        }
    }

    fn args(t: &Target<'_>, enc: &Encoding) -> String {
        encoder_args(t, enc, Path::new("o"), Filters::Inline(&encoder_filters(t, enc)))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Raw frames in, the source's audio and text subtitles copied or converted for the container, the
    /// colour tags and the matching conversion, the codec by the container.
    #[test]
    fn encoder_arguments_follow_the_source_and_container() {
        let p = probe(
            Some("bt709"),
            &[("audio", "aac"), ("subtitle", "subrip"), ("data", "tmcd")],
        );
        let mut t = Target {
            container: "mp4",
            size: (720, 1280),
            deep: false,
            rate: Rational { num: 24, den: 1 },
            source: Some((Path::new("in.mkv"), &p)),
            window: Window {
                start: Some(2.0),
                duration: None,
            },
            timestamps: None,
        };
        let a = args(&t, &Encoding::default());
        for part in [
            "-f rawvideo -pix_fmt rgb24 -s 1280x720 -framerate 24/1 -i pipe:0 -ss 2 -i file:in.mkv",
            "-map 0:v:0 -map 1:1 -map 1:2 -c:v libx264 -pix_fmt yuv420p -crf 18",
            "-color_primaries bt709 -color_trc bt709 -colorspace bt709 -color_range tv",
            "-c:a:0 copy -c:s:0 mov_text",
            "-vf scale=out_color_matrix=bt709:out_range=limited -f mp4 -y file:o",
        ] {
            assert!(a.contains(part), "{part}\nnot in\n{a}");
        }
        assert!(!a.contains("1:3"), "data streams are not mapped: {a}");
        t.container = "webm";
        let p = probe(Some("gbr"), &[("audio", "pcm_s16le")]);
        t.source = Some((Path::new("in.mov"), &p));
        t.size = (180, 320);
        let a = args(&t, &Encoding::default());
        for part in [
            "-c:v libvpx-vp9 -pix_fmt yuv420p -crf 24 -b:v 0",
            "-colorspace smpte170m",
            "-c:a:0 libopus",
        ] {
            assert!(a.contains(part), "{part}\nnot in\n{a}");
        }
        let lossless = Encoding {
            lossless: true,
            ..Encoding::default()
        };
        t.container = "mkv";
        t.deep = true;
        assert!(args(&t, &lossless).contains("-c:v ffv1 -pix_fmt gbrp16le"));
    }

    /// Variable frame rates: every frame's time in ticks of the source's time base, looked up by a binary
    /// search on N, with the encoder in that time base.
    #[test]
    fn variable_rates_get_a_timestamp_table() {
        assert_eq!(
            timestamp_expression(&[0, 512, 1536], 0, 3),
            "if(lt(N,1),0,if(lt(N,2),512,1536))"
        );
        let p = probe(Some("bt709"), &[]);
        let ts = [0, 512, 1536];
        let t = Target {
            container: "mkv",
            size: (180, 320),
            deep: false,
            rate: Rational { num: 24, den: 1 },
            source: Some((Path::new("in.mp4"), &p)),
            window: Window::default(),
            timestamps: Some(&ts),
        };
        let filters = encoder_filters(&t, &Encoding::default());
        assert!(
            filters.starts_with("settb=1/12288,setpts='if(lt(N,1),0,if(lt(N,2),512,1536))',scale="),
            "{filters}"
        );
        let a = args(&t, &Encoding::default());
        assert!(a.contains("-fps_mode passthrough -enc_time_base:v 1/12288"), "{a}");
    }
}
