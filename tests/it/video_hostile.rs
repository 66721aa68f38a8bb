//! Video and YUV4MPEG2 as a hostile user tries them: `--overwrite` never deletes what the run does not
//! write, a file the encoder could not finish is an error, names are files (never options or URLs),
//! FIFOs and stalled children end at the first Ctrl-C with no child left, and y4m headers and truncated
//! streams are refused in one line. ffmpeg comes from the test command; without it these say "skipped"
//! (a failure under CI=true).

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::video::{clip, diffir_video, ffmpeg, ffmpeg_to, files, run, sr_x4, with_clip};

fn names(dir: &Path) -> Vec<String> {
    files(dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The one-line refusal every bad input gets: exit 2 and a single line.
fn refused(o: &Output, says: &str) {
    let e = err(o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains(says), "{says:?} not in {e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
}

/// `--overwrite` replaces only what the run writes: an output that is the input or the folder holding it is
/// refused (nothing touched), and into an existing frames folder only the frame files go, the rest kept.
#[test]
fn overwrite_never_deletes_what_the_run_does_not_write() {
    let Some((dir, input)) = with_clip(false) else { return };
    let d = dir.path();
    std::fs::write(d.join("notes.txt"), b"mine").unwrap();
    std::fs::create_dir(d.join("keep")).unwrap();
    std::fs::write(d.join("keep/data.txt"), b"mine too").unwrap();
    let clip_bytes = std::fs::read(&input).unwrap();
    for output in [d.to_path_buf(), input.clone(), d.join("keep/..")] {
        let r = diffir_video(&[s(&input), "-o", s(&output), "--overwrite", "-q"], &[]);
        refused(&r, "is the input");
    }
    assert_eq!(std::fs::read(&input).unwrap(), clip_bytes);
    assert_eq!(std::fs::read(d.join("notes.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read(d.join("keep/data.txt")).unwrap(), b"mine too");
    // A frames folder of the user's: their file stays, an old frame of the same name is replaced.
    let frames = d.join("frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::write(frames.join("other.txt"), b"keep me").unwrap();
    std::fs::write(frames.join("frame_000001.png"), b"old").unwrap();
    let r = diffir_video(&[s(&input), "-o", s(&frames), "--overwrite", "-q"], &[]);
    assert!(r.status.success(), "{}", err(&r));
    let got = names(&frames);
    assert_eq!(got.len(), 13, "{got:?}");
    assert!(got.contains(&"other.txt".to_string()) && got.contains(&"frame_000012.png".to_string()));
    assert_eq!(std::fs::read(frames.join("other.txt")).unwrap(), b"keep me");
    assert_ne!(std::fs::read(frames.join("frame_000001.png")).unwrap(), b"old");
    // Without --overwrite the folder is refused whole.
    let r = diffir_video(&[s(&input), "-o", s(&frames), "-q"], &[]);
    refused(&r, "already exists");
}

/// An encoder that exits 0 after a failed write (ffmpeg does on a full disk) is not believed: the file it
/// wrote is read back, the run fails with the reason, and no output is left.
#[test]
fn an_encoder_that_could_not_finish_its_file_is_an_error() {
    let Some((dir, input)) = with_clip(false) else { return };
    let d = dir.path();
    let real = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|p| p.join("ffmpeg"))
        .find(|p| p.is_file())
        .unwrap();
    // The real ffmpeg, then its output cut to 4096 bytes, and exit 0: what a full disk does.
    let fake = d.join("ffmpeg-full-disk");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\n\"{}\" \"$@\" || exit $?\nfor last; do :; done\nout=\"${{last#file:}}\"\n\
             case \"$out\" in *.partial.*) truncate -s 4096 \"$out\";; esac\nexit 0\n",
            real.display()
        ),
    )
    .unwrap();
    run("chmod", &["+x", s(&fake)]);
    let out = d.join("full.mp4");
    let r = diffir_video(&[s(&input), "-o", s(&out), "-q"], &[("DIFFIR_FFMPEG", s(&fake))]);
    let e = err(&r);
    assert!(matches!(r.status.code(), Some(1 | 2)), "{e}");
    assert!(
        e.contains("full.mp4") && e.contains("incomplete") && e.contains("disk full"),
        "{e}"
    );
    let left: Vec<String> = names(d)
        .into_iter()
        .filter(|n| n != "clip.mkv" && n != "ffmpeg-full-disk")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Names with a leading dash, a colon or a protocol prefix are those files, for input and for output:
/// `file:x.mp4` is not x.mp4, `pipe:0.mp4` is no pipe, `-report` is no option (and writes no log).
#[test]
fn file_names_are_files_never_options_or_urls() {
    let Some(()) = ffmpeg() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let original = clip(d, false);
    // A different x.mp4, which `file:x.mp4` must not read.
    ffmpeg_to(
        "-v error -f lavfi -i testsrc2=s=32x24:r=24:d=0.25 -c:v libx264 -pix_fmt yuv420p",
        &d.join("x.mp4"),
    );
    for name in ["-report", "-i.mp4", "file:x.mp4", "12:30.mp4", "pipe:0.mkv"] {
        std::fs::copy(&original, d.join(name)).unwrap();
        let out = format!("pipe:1-{}.mkv", name.replace(['/', ':'], "_"));
        let r = Command::new(env!("CARGO_BIN_EXE_diffir"))
            .current_dir(d)
            .args([
                "video",
                "-o",
                &out,
                "-n",
                &sr_x4(),
                "--backend",
                "tract",
                "-q",
                "--",
                name,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(r.status.success(), "{name}: {}", err(&r));
        // Twelve frames of 256×192: the 64×48 clip, not x.mp4 (32×24, 6 frames) or anything else.
        let written = format!("file:{}", d.join(&out).display());
        let probe = run(
            "ffprobe",
            &[
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-count_frames",
                "-show_entries",
                "stream=width,height,nb_read_frames",
                "-of",
                "csv=p=0",
                &written,
            ],
        );
        assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "256,192,12", "{name}");
    }
    let logs: Vec<String> = names(d)
        .into_iter()
        .filter(|n| n.starts_with("ffprobe-") || n.starts_with("ffmpeg-"))
        .collect();
    assert!(logs.is_empty(), "{logs:?}");
}

/// `head` with the x4 fixture model on tract, quiet.
fn on_x4<'a>(head: &[&'a str], model: &'a str) -> Vec<&'a str> {
    let mut args = head.to_vec();
    args.extend(["-n", model, "--backend", "tract", "-q"]);
    args
}

fn spawn_diffir(args: &[&str], stdin: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_diffir"))
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn interrupt_once(child: &Child) {
    run("kill", &["-INT", &child.id().to_string()]);
}

/// Wait for `child` at most `secs`; its output, or a failure naming `what`.
fn finished_within(child: Child, secs: u64, what: &str) -> Output {
    let id = child.id();
    let start = Instant::now();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    while !waiter.is_finished() {
        if start.elapsed() > Duration::from_secs(secs) {
            let _ = Command::new("kill").args(["-KILL", &id.to_string()]).status();
            panic!("{what}: still running after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    waiter.join().unwrap()
}

/// Whether the process `pid` is alive (a zombie is not).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// A FIFO is refused at once; a decoder that stalls ends at the first Ctrl-C (exit 130), and no child
/// outlives the run.
#[test]
fn fifos_and_stalled_decoders_end_at_the_first_ctrl_c_with_no_child_left() {
    let Some((dir, input)) = with_clip(false) else { return };
    let d = dir.path();
    let fifo = d.join("pipe.mp4");
    run("mkfifo", &[s(&fifo)]);
    let (model, out) = (sr_x4(), d.join("o.mp4"));
    let child = spawn_diffir(&on_x4(&["video", s(&fifo), "-o", s(&out)], &model), Stdio::null());
    refused(&finished_within(child, 30, "a FIFO input"), "not a regular file");
    // A decoder that prints nothing and never ends: it records its pid, then sleeps.
    let pid_file = d.join("decoder.pid");
    let fake = d.join("ffmpeg-stalls");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho $$ > '{}'\nexec sleep 600\n", pid_file.display()),
    )
    .unwrap();
    run("chmod", &["+x", s(&fake)]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_diffir"));
    cmd.args(on_x4(&["video", s(&input), "-o", s(&out)], &model))
        .env("DIFFIR_FFMPEG", &fake)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let start = Instant::now();
    while !pid_file.is_file() || std::fs::read_to_string(&pid_file).unwrap().trim().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(60), "the decoder never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    interrupt_once(&child);
    let out = finished_within(child, 10, "a stalled decoder after one Ctrl-C");
    assert_eq!(out.status.code(), Some(130), "{}", err(&out));
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
    let start = Instant::now();
    while alive(&pid) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the decoder {pid} outlived the run"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!d.join("o.mp4").exists());
}

/// `--duration 0` (ffmpeg's "no limit") and a 300-digit duration are usage errors; `--max-pixels` refuses a
/// video from its probed size, before a frame is decoded.
#[test]
fn durations_and_max_pixels_are_checked_before_decoding() {
    let Some((dir, input)) = with_clip(false) else { return };
    let out = dir.path().join("o.mp4");
    for bad in ["0", "1e300"] {
        let r = diffir_video(&[s(&input), "-o", s(&out), "--duration", bad, "-q"], &[]);
        assert_eq!(r.status.code(), Some(2), "{bad}: {}", err(&r));
        assert!(err(&r).len() < 400, "{bad}: {}", err(&r));
    }
    let r = diffir_video(&[s(&input), "-o", s(&out), "--max-pixels", "1000", "-q"], &[]);
    refused(&r, "64x48 is 3072 pixels, over the limit of 1000");
    // A start past the end says so (it said "no frames could be decoded").
    let r = diffir_video(&[s(&input), "-o", s(&out), "--start", "5", "-q"], &[]);
    refused(&r, "nothing in the window asked for: it starts at 5");
    // A missing ffmpeg is told before the model is read (the model named here does not exist).
    let r = diffir(
        &["video", s(&input), "-o", s(&out), "-n", "/nonexistent/model", "-q"],
        &[("DIFFIR_FFMPEG", "/nonexistent/ffmpeg")],
    );
    refused(
        &r,
        "ffmpeg: $DIFFIR_FFMPEG names /nonexistent/ffmpeg, which is not a file",
    );
    assert!(!out.exists());
}

/// Two frames at one timestamp are refused once the timestamps are read (before the frames are restored),
/// naming the frames.
#[test]
fn duplicate_timestamps_are_refused_before_the_restore() {
    let Some(()) = ffmpeg() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("dup.mkv");
    ffmpeg_to(
        "-v error -f lavfi -i testsrc2=s=64x48:r=24:d=0.5 \
         -vf setpts='(N+if(eq(N,5),-1,0))/24/TB' -fps_mode passthrough -c:v ffv1",
        &input,
    );
    let out = dir.path().join("o.mkv");
    let r = diffir_video(&[s(&input), "-o", s(&out), "-q"], &[]);
    refused(&r, "frames 5 and 6 have the same timestamp");
    assert!(!out.exists());
}

/// A YUV4MPEG2 stream of `frames` 64×48 4:2:0 frames from the clip.
fn y4m_stream(input: &Path) -> Vec<u8> {
    ffmpeg_to(
        &format!("-v error -i {} -f yuv4mpegpipe -pix_fmt yuv420p -frames:v 4", s(input)),
        Path::new("-"),
    )
    .stdout
}

fn y4m_restore(stdin: &[u8], extra: &[&str]) -> Output {
    let model = sr_x4();
    let mut args = on_x4(&["restore", "-", "-o", "-", "--format", "y4m"], &model);
    args.extend_from_slice(extra);
    let mut child = spawn_diffir(&args, Stdio::piped());
    let mut pipe = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feed = std::thread::spawn(move || {
        let _ = pipe.write_all(&data);
    });
    let out = finished_within(child, 120, "a y4m restore");
    feed.join().unwrap();
    out
}

/// Headers whose size overflows or passes `--max-pixels` are refused in one line; a stream cut inside a
/// frame is an error naming that frame, the frames before it written.
#[test]
fn y4m_headers_are_checked_and_truncation_is_an_error() {
    let Some((_dir, input)) = with_clip(false) else { return };
    let r = y4m_restore(b"YUV4MPEG2 W4294967296 H4294967296 F25:1 Cmono\n", &[]);
    refused(&r, "over the limit");
    let stream = y4m_stream(&input);
    let r = y4m_restore(&stream, &["--max-pixels", "1000"]);
    refused(&r, "64x48 is 3072 pixels, over the limit of 1000");
    // 4 frames of 64×48×1.5 bytes after their FRAME lines: cut in the middle of the third.
    let header = stream.iter().position(|&b| b == b'\n').unwrap() + 1;
    let frame = 6 + 64 * 48 * 3 / 2;
    let cut = header + 2 * frame + frame / 2;
    let r = y4m_restore(&stream[..cut], &[]);
    let e = err(&r);
    assert!(matches!(r.status.code(), Some(1 | 2)), "{e}");
    assert!(e.contains("frame 3 is truncated"), "{e}");
    let out_header = r.stdout.iter().position(|&b| b == b'\n').unwrap() + 1;
    let out_frame = 6 + 256 * 192 * 3 / 2;
    assert_eq!(
        r.stdout.len(),
        out_header + 2 * out_frame,
        "the two whole frames are written"
    );
}

/// A stalled pipe: the first Ctrl-C stops the run (exit 130) while a read blocks.
#[test]
fn ctrl_c_stops_a_y4m_run_blocked_on_a_stalled_pipe() {
    let Some((_dir, input)) = with_clip(false) else { return };
    let stream = y4m_stream(&input);
    let header = stream.iter().position(|&b| b == b'\n').unwrap() + 1;
    let model = sr_x4();
    let mut child = spawn_diffir(
        &on_x4(&["restore", "-", "-o", "-", "--format", "y4m"], &model),
        Stdio::piped(),
    );
    // The header and half a frame, then nothing, with the pipe kept open.
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(&stream[..header + 1000]).unwrap();
    pipe.flush().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    interrupt_once(&child);
    let out = finished_within(child, 10, "a y4m run on a stalled pipe after one Ctrl-C");
    drop(pipe);
    assert_eq!(out.status.code(), Some(130), "{}", err(&out));
}
