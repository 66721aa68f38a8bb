//! Video: `diffir video` through ffmpeg (frames, rate and audio kept), each frame equal to `diffir restore`
//! with `--prior frame`, one prior per shot with `--prior shot`, YUV4MPEG2 pipes, and clear errors that
//! leave nothing behind. ffmpeg comes from the test command (Debian's package); without it these tests say
//! "skipped", and fail under CI=true.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use diffir::internal::video::{self, PriorMode, VideoOptions};
use diffir::{BackendKind, Bundle, Control, Pipeline, RestoreOptions};

use crate::common::*;

/// ffmpeg's folder on the PATH, or None where it is missing (a failure under CI=true).
pub(crate) fn ffmpeg() -> Option<()> {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .find(|d| d.join("ffmpeg").is_file() && d.join("ffprobe").is_file());
    match found {
        Some(dir) => needed(&dir, "ffmpeg", "").map(|_| ()),
        None => needed(Path::new("/nonexistent/ffmpeg"), "ffmpeg and ffprobe", "install ffmpeg").map(|_| ()),
    }
}

pub(crate) fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// ffmpeg with `args` (words split at spaces, none of them holding one) and then `output`.
pub(crate) fn ffmpeg_to(args: &str, output: &Path) -> Output {
    let mut all: Vec<&str> = args.split_whitespace().collect();
    all.push(s(output));
    run("ffmpeg", &all)
}

/// `diffir video` with the x4 fixture model on tract, plus `args`.
pub(crate) fn diffir_video(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let model = sr_x4();
    let mut all = vec!["video", "-n", &model, "--backend", "tract"];
    all.extend_from_slice(args);
    diffir(&all, envs)
}

/// `diffir restore` of `input` into `output` with the x4 fixture model on tract, which must succeed.
pub(crate) fn restore_x4(input: &Path, output: &Path) {
    let r = diffir(
        &[
            "restore",
            s(input),
            "-o",
            s(output),
            "-n",
            &sr_x4(),
            "--backend",
            "tract",
            "-q",
        ],
        &[],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

pub(crate) fn sr_x4() -> String {
    bundles_dir().join("sr_x4").to_string_lossy().into_owned()
}

/// A 12-frame 64×48 clip at 24 fps, lossless RGB (FFV1) with 0.5 s of AAC audio; with `cut`, frames 6–11
/// are another scene.
pub(crate) fn clip(dir: &Path, cut: bool) -> PathBuf {
    let path = dir.join(if cut { "cut.mkv" } else { "clip.mkv" });
    let video = if cut {
        "testsrc2=s=64x48:r=24:d=0.25[a];smptebars=s=64x48:r=24:d=0.25[b];[a][b]concat=n=2[out0]"
    } else {
        "testsrc2=s=64x48:r=24:d=0.5"
    };
    ffmpeg_to(
        &format!(
            "-v error -f lavfi -i {video} -f lavfi -i sine=frequency=440:sample_rate=48000:d=0.5 \
             -frames:v 12 -c:v ffv1 -pix_fmt bgr0 -c:a aac -y"
        ),
        &path,
    );
    path
}

/// A temporary folder holding `clip(cut)`; None where ffmpeg is missing (a failure under CI=true).
pub(crate) fn with_clip(cut: bool) -> Option<(tempfile::TempDir, PathBuf)> {
    ffmpeg()?;
    let dir = tempfile::tempdir().unwrap();
    let input = clip(dir.path(), cut);
    Some((dir, input))
}

/// (frames, width, height, rate) of the video and the audio's duration, by ffprobe.
fn describe(path: &Path) -> (u64, u64, u64, String, f64) {
    let out = run(
        "ffprobe",
        &["-v", "error", "-count_frames", "-show_streams", "-of", "json", s(path)],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let streams = json["streams"].as_array().unwrap();
    let v = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    let a = streams
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .expect("an audio stream");
    let num = |x: &serde_json::Value| x.as_str().and_then(|s| s.parse::<u64>().ok()).or(x.as_u64()).unwrap();
    let duration = a["duration"]
        .as_str()
        .map(|d| d.parse::<f64>().unwrap())
        .or_else(|| a["tags"]["DURATION"].as_str().map(hms))
        .unwrap();
    (
        num(&v["nb_read_frames"]),
        num(&v["width"]),
        num(&v["height"]),
        v["r_frame_rate"].as_str().unwrap().to_string(),
        duration,
    )
}

/// "00:00:00.500000000" in seconds.
fn hms(t: &str) -> f64 {
    t.split(':')
        .fold(0.0, |acc, part| acc * 60.0 + part.parse::<f64>().unwrap())
}

/// Every frame of `input` as PNG files (one per decoded frame: ffmpeg's default for image files would
/// repeat frames to a constant rate).
fn extract(input: &Path, pattern: &Path) {
    ffmpeg_to(&format!("-v error -i {} -fps_mode passthrough", s(input)), pattern);
}

fn pixels(path: &Path) -> Vec<u8> {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
        .into_raw()
}

pub(crate) fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// Twelve 64×48 frames with audio become twelve 256×192 frames in an mp4 at the same rate, with the
/// audio's duration kept.
#[test]
fn a_clip_with_audio_keeps_its_frames_rate_and_audio() {
    let Some((dir, input)) = with_clip(false) else { return };
    let out = dir.path().join("out.mp4");
    let r = diffir_video(&[s(&input), "-o", s(&out), "-q"], &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (frames, w, h, rate, audio) = describe(&out);
    let (_, _, _, in_rate, in_audio) = describe(&input);
    assert_eq!((frames, w, h), (12, 256, 192));
    assert_eq!((rate.as_str(), in_rate.as_str()), ("24/1", "24/1"));
    assert!(
        (audio - in_audio).abs() < 0.002,
        "audio {audio} s, the input's {in_audio} s"
    );
    assert_eq!(
        files(dir.path()).len(),
        2,
        "only the input and the output: {:?}",
        files(dir.path())
    );
}

/// With `--prior frame`, every frame is what `diffir restore` makes of it (the same bytes).
#[test]
fn frames_equal_restore_with_frame_priors() {
    let Some((dir, input)) = with_clip(false) else { return };
    let (src, refs, out) = (dir.path().join("src"), dir.path().join("ref"), dir.path().join("out"));
    std::fs::create_dir(&src).unwrap();
    extract(&input, &src.join("%02d.png"));
    restore_x4(&src, &refs);
    let r = diffir_video(&[s(&input), "-o", s(&out), "--prior", "frame", "-q"], &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (got, want) = (files(&out), files(&refs));
    assert_eq!(got.len(), 12);
    assert_eq!(want.len(), 12);
    for (g, w) in got.iter().zip(&want) {
        assert!(pixels(g) == pixels(w), "{} differs from {}", g.display(), w.display());
    }
}

fn pipeline() -> Pipeline {
    let options = RestoreOptions {
        backend: BackendKind::Tract,
        ..RestoreOptions::default()
    };
    Pipeline::open(Bundle::load(bundles_dir().join("sr_x4")).unwrap(), &options).unwrap()
}

/// With `--prior shot`, a cut in the middle gives two shots; each frame got its shot's prior (restoring the
/// frame with that prior gives the same bytes), which is the prior of the features pooled over the shot's
/// frames, and differs from the frames' own.
#[test]
fn shot_priors_are_shared_within_a_shot_and_a_cut_starts_another() {
    let Some((dir, input)) = with_clip(true) else { return };
    let (src, out) = (dir.path().join("src"), dir.path().join("out"));
    std::fs::create_dir(&src).unwrap();
    extract(&input, &src.join("%02d.png"));
    let p = pipeline();
    let opts = VideoOptions {
        prior: PriorMode::Shot,
        ..VideoOptions::default()
    };
    let report = video::restore_video(&p, &input, &out, &opts, &Control::default(), &|_| {}).unwrap();
    assert_eq!(report.frames, 12);
    let starts: Vec<(usize, usize)> = report.shots.iter().map(|s| (s.first, s.frames)).collect();
    assert_eq!(
        starts,
        [(0, 6), (6, 6)],
        "scores {:?}",
        report.shots.iter().map(|s| s.score).collect::<Vec<_>>()
    );
    assert!(report.shots[1].score > opts.scene_threshold);
    // The fixture model's priors move little with the content (1e-4 here); float noise is 1e-7.
    assert!(max_abs_diff(&report.shots[0].prior, &report.shots[1].prior) > 1e-5);
    let frames: Vec<PathBuf> = files(&src);
    for shot in &report.shots {
        let mut pooled = diffir::PooledFeatures::default();
        for f in &frames[shot.first..shot.first + shot.frames] {
            pooled.add(&p.pooled_features(&diffir::read_image(f).unwrap(), None).unwrap());
        }
        let (_, steps) = p.shared_prior(&pooled, None).unwrap();
        assert!(
            max_abs_diff(steps.last().unwrap(), &shot.prior) < 1e-6,
            "shot at {}",
            shot.first
        );
        let outputs = files(&out);
        for (k, frame) in frames.iter().enumerate().skip(shot.first).take(shot.frames) {
            let image = diffir::read_image(frame).unwrap();
            let own = p.restore_image(&image, None).unwrap();
            // The first scene moves (its frames' own priors differ from the shot's); the second is still.
            let apart = max_abs_diff(own.ipr(), &shot.prior);
            assert!(shot.first > 0 || apart > 1e-6, "frame {k} got its own prior ({apart})");
            let control = Control {
                prior: Some(&shot.prior),
                ..Control::default()
            };
            let shared = p.restore_image_with(&image, None, &control).unwrap();
            let want: Vec<u8> = shared.image.data.iter().map(|&v| p.quantize().to_u8(v)).collect();
            assert!(pixels(&outputs[k]) == want, "frame {k}");
        }
    }
}

/// A shot of one frame gets the prior `restore` gives that frame: the pooled features are CPEN's own pool.
#[test]
fn a_one_frame_shot_has_the_frames_own_prior() {
    let p = pipeline();
    let image = diffir::read_image(&bundles_dir().join("sr_x4/input.png")).unwrap();
    let own = p.restore_image(&image, None).unwrap();
    let pooled = p.pooled_features(&image, None).unwrap();
    let (condition, steps) = p.shared_prior(&pooled, None).unwrap();
    assert!(max_abs_diff(&condition, &own.condition) < 1e-4);
    assert!(max_abs_diff(steps.last().unwrap(), own.ipr()) < 1e-4);
}

/// The header of a YUV4MPEG2 stream, as text.
fn y4m_header(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == b'\n').unwrap();
    String::from_utf8(bytes[..end].to_vec()).unwrap()
}

/// `diffir restore - -o - --format y4m` keeps 4:2:0 and 4:4:4 (8 and 10 bits), the rate and the range
/// tag, makes the frames 4× larger, and ffmpeg reads what it writes; the pictures are those of restoring
/// the frames as PNG files (PSNR over 40 dB in 4:4:4, over 22 dB in 4:2:0).
#[test]
fn y4m_pipes_round_trip_their_headers() {
    let Some((dir, input)) = with_clip(false) else { return };
    for (pix_fmt, tag) in [("yuv420p", "C420jpeg"), ("yuv444p", "C444"), ("yuv420p10le", "C420p10")] {
        let args = format!(
            "-v error -i {} -fps_mode passthrough -f yuv4mpegpipe -pix_fmt {pix_fmt} -strict -1",
            s(&input)
        );
        let stream = ffmpeg_to(&args, Path::new("-")).stdout;
        let header = y4m_header(&stream);
        assert!(header.contains(&format!(" {tag}")), "{header}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_diffir"))
            .args([
                "restore",
                "-",
                "-o",
                "-",
                "--format",
                "y4m",
                "-n",
                &sr_x4(),
                "--backend",
                "tract",
                "-q",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let feed = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &stream));
        let out = child.wait_with_output().unwrap();
        feed.join().unwrap().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let header = y4m_header(&out.stdout);
        for part in [
            "W256",
            "H192",
            "F24:1",
            tag,
            "XCOLORRANGE=LIMITED",
            "XCOLORMATRIX=BT601",
        ] {
            assert!(header.split(' ').any(|p| p == part), "{part} not in {header}");
        }
        let restored = dir.path().join(format!("{pix_fmt}.y4m"));
        std::fs::write(&restored, &out.stdout).unwrap();
        let png = dir.path().join(format!("{pix_fmt}-%02d.png"));
        extract(&restored, &png);
        let first = dir.path().join(format!("{pix_fmt}-01.png"));
        assert!(dir.path().join(format!("{pix_fmt}-12.png")).exists());
        assert!(!dir.path().join(format!("{pix_fmt}-13.png")).exists());
        // The first frame against restoring it as a picture.
        let frame = dir.path().join(format!("{pix_fmt}-in.png"));
        ffmpeg_to(&format!("-v error -i {} -frames:v 1", s(&input)), &frame);
        let want = dir.path().join(format!("{pix_fmt}-want.png"));
        restore_x4(&frame, &want);
        let f = |p: &Path| pixels(p).iter().map(|&v| v as f32 / 255.0).collect::<Vec<f32>>();
        // 4:2:0 halves the chroma of the fixture model's output, whose colour varies from pixel to pixel
        // (ffmpeg's own 4:2:0 round trip of that picture gives 27 dB); 4:4:4 keeps it (swapped or
        // misread planes give under 15 dB).
        let db = psnr(&f(&first), &f(&want));
        let floor = if pix_fmt == "yuv444p" { 40.0 } else { 22.0 };
        assert!(db > floor, "{pix_fmt}: {db:.1} dB");
    }
}

/// No video stream, a truncated file and a missing ffmpeg: exit code 2, one clear line, no output.
#[test]
fn bad_inputs_and_a_missing_ffmpeg_leave_nothing() {
    let Some((dir, input)) = with_clip(false) else { return };
    let audio = dir.path().join("song.m4a");
    ffmpeg_to("-v error -f lavfi -i sine=d=0.3 -c:a aac", &audio);
    let good = dir.path().join("good.mp4");
    let r = diffir_video(&[s(&input), "-o", s(&good), "-q"], &[]);
    assert!(r.status.success());
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.mp4");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let empty_path = dir.path().join("bin");
    std::fs::create_dir(&empty_path).unwrap();
    type Case<'a> = (&'a Path, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 3] = [
        (&audio, &[], "song.m4a: it has no video stream"),
        (&truncated, &[], "truncated.mp4"),
        (
            &input,
            &[("PATH", s(&empty_path))],
            "not found on the PATH; video needs ffmpeg and ffprobe: install them",
        ),
    ];
    for (k, (input, envs, says)) in cases.into_iter().enumerate() {
        let out = dir.path().join(format!("out{k}.mp4"));
        let r = diffir_video(&[s(input), "-o", s(&out), "-q"], envs);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{err}");
        assert!(err.contains(says), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!out.exists());
    }
    let left: Vec<String> = files(dir.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Frame timestamps by ffprobe, in seconds.
pub(crate) fn timestamps(path: &Path) -> Vec<String> {
    let out = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=best_effort_timestamp_time",
            "-of",
            "csv=p=0",
            s(path),
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_end_matches(',').to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// A variable frame rate (a 0.3 s and a 0.1 s gap in a 24 fps clip) keeps every frame's timestamp, in MP4
/// and in Matroska (whose base and average rates ffprobe reports equal for it: the packets tell).
#[test]
fn variable_frame_rates_keep_every_timestamp() {
    let Some(()) = ffmpeg() else { return };
    let dir = tempfile::tempdir().unwrap();
    for container in ["mp4", "mkv"] {
        let input = dir.path().join(format!("vfr.{container}"));
        ffmpeg_to(
            "-v error -f lavfi -i testsrc2=s=64x48:r=24:d=1 \
             -vf setpts='(N/24+if(gt(N,10),0.3,0)+if(gt(N,17),0.1,0))/TB' \
             -fps_mode passthrough -c:v libx264 -pix_fmt yuv420p",
            &input,
        );
        let out = dir.path().join(format!("out-{container}.mkv"));
        let r = diffir_video(&[s(&input), "-o", s(&out)], &[]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(r.status.success(), "{container}: {err}");
        assert!(
            err.contains("variable frame rate: 24 frame timestamps kept"),
            "{container}: {err}"
        );
        let (want, got) = (timestamps(&input), timestamps(&out));
        assert_eq!(want.len(), 24, "{container}");
        let secs = |v: &[String]| v.iter().map(|t| t.parse::<f64>().unwrap()).collect::<Vec<_>>();
        for (w, g) in secs(&want).iter().zip(secs(&got)) {
            assert!((w - g).abs() < 0.0015, "{container}: {want:?}\n{got:?}");
        }
        assert_eq!(got.len(), 24, "{container}");
    }
}

/// A folder of frames becomes a video at --fps; a finished output is skipped with --skip-existing and
/// kept (exit 2) without it.
#[test]
fn a_folder_of_frames_becomes_a_video_and_finished_outputs_are_kept() {
    let Some((dir, input)) = with_clip(false) else { return };
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    extract(&input, &frames.join("%04d.png"));
    let out = dir.path().join("out.mov");
    let args = [s(&frames), "-o", s(&out), "--fps", "30000/1001", "-q"];
    let r = diffir_video(&args, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let probe = run(
        "ffprobe",
        &["-v", "error", "-count_frames", "-show_streams", "-of", "json", s(&out)],
    );
    let json: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
    let v = &json["streams"][0];
    assert_eq!(
        (v["r_frame_rate"].as_str(), v["nb_read_frames"].as_str()),
        (Some("30000/1001"), Some("12"))
    );
    let before = std::fs::metadata(&out).unwrap().modified().unwrap();
    let mut again = args.to_vec();
    again.push("--skip-existing");
    let r = diffir_video(&again, &[]);
    assert!(r.status.success());
    let r = diffir_video(&args, &[]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("already exists (use --overwrite to replace it)"));
    assert_eq!(std::fs::metadata(&out).unwrap().modified().unwrap(), before);
}

/// A 10-bit source is decoded as 16-bit RGB: its frames are written as 16-bit PNG files, and as 10-bit
/// video.
#[test]
fn ten_bit_sources_stay_deep() {
    let Some(()) = ffmpeg() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("deep.mkv");
    ffmpeg_to(
        "-v error -f lavfi -i testsrc2=s=64x48:r=24:d=0.125 -c:v ffv1 -pix_fmt yuv444p10le",
        &input,
    );
    let (frames, video) = (dir.path().join("frames"), dir.path().join("deep.mp4"));
    for out in [&frames, &video] {
        let r = diffir_video(&[s(&input), "-o", s(out), "-q"], &[]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    let png = image::open(frames.join("frame_000001.png")).unwrap();
    assert_eq!(png.color(), image::ColorType::Rgb16);
    let probe = run("ffprobe", &["-v", "error", "-show_streams", "-of", "json", s(&video)]);
    let json: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
    assert_eq!(json["streams"][0]["pix_fmt"], "yuv420p10le");
}

/// Ctrl-C during a run: exit code 130 and no output, finished or partial.
#[test]
fn an_interrupted_run_leaves_no_output() {
    let Some(()) = ffmpeg() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("long.mkv");
    ffmpeg_to("-v error -f lavfi -i testsrc2=s=64x48:r=24:d=60 -c:v ffv1", &input);
    let out = dir.path().join("out.mp4");
    let child = Command::new(env!("CARGO_BIN_EXE_diffir"))
        .args([
            "video",
            s(&input),
            "-o",
            s(&out),
            "-n",
            &sr_x4(),
            "--backend",
            "tract",
            "-q",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the encoder has started (its temporary file exists), interrupt.
    let started = std::time::Instant::now();
    while !std::fs::read_dir(dir.path())
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().starts_with(".diffir-"))
    {
        assert!(started.elapsed().as_secs() < 60, "no temporary output appeared");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    run("kill", &["-INT", &child.id().to_string()]);
    let r = child.wait_with_output().unwrap();
    assert_eq!(r.status.code(), Some(130), "{}", String::from_utf8_lossy(&r.stderr));
    let names: Vec<String> = files(dir.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["long.mkv"]);
}
