//! The ffmpeg command line of an encode: raw RGB frames on standard input, the source's audio and subtitles
//! mapped and copied (or converted where the container cannot hold them), the codec and quality the
//! container and options call for, the colour tags, and a timestamp table for variable frame rates.

use std::ffi::OsString;
use std::path::Path;

use super::probe::{Probe, Rational, VideoInfo};
use super::source::Window;

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

/// The encoder's arguments after the program name: raw frames on standard input, the source's other
/// streams, the codec, the colour tags and the output file.
pub fn encoder_args(t: &Target<'_>, enc: &Encoding, output: &Path, filter_script: Option<&Path>) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![];
    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
    let (h, w) = t.size;
    push(&["-f", "rawvideo", "-pix_fmt", if t.deep { "rgb48le" } else { "rgb24" }]);
    push(&[
        "-s",
        &format!("{w}x{h}"),
        "-framerate",
        &t.rate.to_string(),
        "-i",
        "pipe:0",
    ]);
    let video = t.source.map(|(_, p)| &p.video);
    let mut maps = vec!["-map".to_string(), "0:v:0".into()];
    let mut stream_args: Vec<String> = vec![];
    if let Some((path, probe)) = t.source {
        let mut inputs = t.window.args();
        inputs.push("-i".into());
        a.extend(inputs.into_iter().map(OsString::from));
        a.push(path.as_os_str().to_owned());
        let (mut audio, mut subs) = (0, 0);
        for s in &probe.others {
            match s.kind.as_str() {
                "audio" => {
                    let keep = match t.container {
                        "webm" => matches!(s.codec.as_str(), "opus" | "vorbis"),
                        "mp4" => !s.codec.starts_with("pcm_"),
                        _ => true,
                    };
                    let codec = if keep {
                        "copy"
                    } else if t.container == "webm" {
                        "libopus"
                    } else {
                        "aac"
                    };
                    maps.extend(["-map".into(), format!("1:{}", s.index)]);
                    stream_args.extend([format!("-c:a:{audio}"), codec.into()]);
                    audio += 1;
                }
                "subtitle" => {
                    let text = matches!(
                        s.codec.as_str(),
                        "subrip" | "ass" | "ssa" | "mov_text" | "webvtt" | "text"
                    );
                    let codec = match t.container {
                        "mkv" if s.codec == "mov_text" => Some("srt"),
                        "mkv" => Some("copy"),
                        "mp4" | "mov" if text => Some("mov_text"),
                        "webm" if text => Some("webvtt"),
                        _ => None,
                    };
                    if let Some(c) = codec {
                        maps.extend(["-map".into(), format!("1:{}", s.index)]);
                        stream_args.extend([format!("-c:s:{subs}"), c.into()]);
                        subs += 1;
                    }
                }
                _ => {}
            }
        }
    }
    a.extend(maps.into_iter().map(OsString::from));
    let (codec, pix_fmt, quality): (String, &str, Vec<String>) = match (enc.lossless, t.container) {
        (true, "mkv") => ("ffv1".into(), if t.deep { "gbrp16le" } else { "bgr0" }, vec![]),
        (true, "webm") => (
            "libvpx-vp9".into(),
            if t.deep { "gbrp10le" } else { "gbrp" },
            vec!["-lossless".into(), "1".into()],
        ),
        (true, _) => ("libx264rgb".into(), "rgb24", vec!["-qp".into(), "0".into()]),
        (false, container) => {
            let codec = enc.codec.clone().unwrap_or_else(|| {
                if container == "webm" {
                    "libvpx-vp9".into()
                } else {
                    "libx264".into()
                }
            });
            let vp9 = codec.contains("vpx");
            let crf = enc.crf.unwrap_or(if vp9 { 24 } else { 18 });
            let mut q = vec!["-crf".into(), crf.to_string()];
            if vp9 {
                q.extend(["-b:v".into(), "0".into()]);
            }
            (codec, if t.deep { "yuv420p10le" } else { "yuv420p" }, q)
        }
    };
    let codec = if enc.lossless {
        enc.codec.clone().unwrap_or(codec)
    } else {
        codec
    };
    a.extend(["-c:v", codec.as_str(), "-pix_fmt", pix_fmt].map(OsString::from));
    a.extend(quality.into_iter().map(OsString::from));
    let rgb_out = pix_fmt.starts_with("gbr") || pix_fmt.starts_with("bgr") || pix_fmt.starts_with("rgb");
    // The colour tags, and the matrix and range the RGB → Y'CbCr conversion uses to match them (swscale
    // would use BT.601 in limited range otherwise).
    let mut filters: Vec<String> = vec![];
    if let Some(ts) = t.timestamps {
        let tb = video
            .and_then(|v| v.time_base)
            .unwrap_or(Rational { num: 1, den: 90000 });
        filters.push(format!("settb={tb}"));
        filters.push(format!("setpts='{}'", timestamp_expression(ts, 0, ts.len())));
    }
    push_colour(&mut a, &mut filters, video, h, rgb_out);
    if let Some(script) = filter_script {
        a.push("-filter_script:v".into());
        a.push(script.as_os_str().to_owned());
    }
    if t.timestamps.is_some() {
        // Each frame at its own time: no frames dropped or repeated, and the encoder counts in the source's
        // time base (its default, one frame period, would round the times to the average rate).
        let tb = video
            .and_then(|v| v.time_base)
            .unwrap_or(Rational { num: 1, den: 90000 });
        a.extend(["-fps_mode", "passthrough", "-enc_time_base:v", &tb.to_string()].map(OsString::from));
    }
    a.extend(stream_args.into_iter().map(OsString::from));
    if t.container == "mp4" || t.container == "mov" {
        a.extend(["-movflags", "+faststart"].map(OsString::from));
    }
    let format = match t.container {
        "mkv" => "matroska",
        other => other,
    };
    a.extend(["-f", format, "-y"].map(OsString::from));
    a.push(output.as_os_str().to_owned());
    // The filters go in a script file where one is given (a variable frame rate's table can be long);
    // here they are returned for the caller to write.
    if filter_script.is_none() && !filters.is_empty() {
        let at = a.len() - 4;
        a.insert(at, "-vf".into());
        a.insert(at + 1, filters.join(",").into());
    }
    a
}

/// The filters of an encode, written to a script file for variable frame rates.
pub fn encoder_filters(t: &Target<'_>, enc: &Encoding) -> String {
    let args = encoder_args(t, enc, Path::new("out"), None);
    args.iter()
        .position(|a| a == "-vf")
        .map(|i| args[i + 1].to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn push_colour(a: &mut Vec<OsString>, filters: &mut Vec<String>, v: Option<&VideoInfo>, height: usize, rgb_out: bool) {
    let mut tag = |flag: &str, value: &str| {
        a.push(flag.into());
        a.push(value.into());
    };
    if let Some(p) = v.and_then(|v| v.primaries.as_deref()) {
        tag("-color_primaries", p);
    }
    if let Some(t) = v.and_then(|v| v.transfer.as_deref()) {
        tag("-color_trc", t);
    }
    if rgb_out {
        return;
    }
    // The source's matrix and range where it is Y'CbCr; for an RGB source (or none) the usual choice for
    // the output's height (BT.709 from 720 lines, else BT.601) in limited range, tagged so players agree.
    let (matrix, range) = match v
        .and_then(|v| v.matrix.as_deref().zip(Some(v.range.as_deref())))
        .filter(|(m, _)| scale_matrix(m).is_some())
    {
        Some((m, r)) => (m.to_string(), r.unwrap_or("tv").to_string()),
        None => (
            if height >= 720 { "bt709" } else { "smpte170m" }.to_string(),
            "tv".to_string(),
        ),
    };
    tag("-colorspace", &matrix);
    tag("-color_range", &range);
    let m = scale_matrix(&matrix).unwrap_or("bt601");
    let r = if range == "pc" { "full" } else { "limited" };
    filters.push(format!("scale=out_color_matrix={m}:out_range={r}"));
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
        encoder_args(t, enc, Path::new("o"), None)
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
            "-f rawvideo -pix_fmt rgb24 -s 1280x720 -framerate 24/1 -i pipe:0 -ss 2 -i in.mkv",
            "-map 0:v:0 -map 1:1 -map 1:2 -c:v libx264 -pix_fmt yuv420p -crf 18",
            "-color_primaries bt709 -color_trc bt709 -colorspace bt709 -color_range tv",
            "-c:a:0 copy -c:s:0 mov_text",
            "-vf scale=out_color_matrix=bt709:out_range=limited -f mp4 -y o",
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
