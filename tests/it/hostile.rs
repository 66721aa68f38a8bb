//! What a hostile client or input folder tries, against the real binary: slow and idle connections, the
//! connection limit, shutdown with clients that never finish, declared and streamed bodies over the limit,
//! ICC profiles that expand, per-request tiles outside the server's bounds, protocol corners, Ctrl-C and
//! file-size limits in the CLI, FIFOs and control characters in names, Triton URLs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::common::*;
use crate::server::{tract_server, wait_child, Server};
use diffir::internal::pipeline::Stages;

/// `diffir restore -n sr_x4 --backend tract ARGS`, stderr piped.
fn spawn_restore(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_diffir"))
        .args(["restore", "-n", s(&bundles_dir().join("sr_x4")), "--backend", "tract"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Send `head` (and `body`), read the whole answer (the server closes or answers `Connection: close`).
fn raw(srv: &Server, head: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = srv.connect();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_answer(&mut s)
}

/// One HTTP answer: status, headers (lower-case), body (by Content-Length).
fn read_answer(s: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let code: u16 = status
        .split(' ')
        .nth(1)
        .unwrap_or_else(|| panic!("no status in {status:?}"))
        .parse()
        .unwrap();
    let mut headers = String::new();
    let mut len = 0;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        headers.push_str(&lower);
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (code, headers, body)
}

/// Whether the server closed `s` within `limit` (a read returns 0 bytes or an error).
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return start.elapsed() <= limit,
        }
    }
}

fn small_png() -> Vec<u8> {
    std::fs::read(bundles_dir().join("sr_x4/input.png")).unwrap()
}

fn post_head(path: &str, len: usize, content_type: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\r\n")
}

#[test]
fn sigterm_exits_within_the_drain_deadline_despite_a_client_that_never_finishes() {
    let mut srv = tract_server(&["--shutdown-timeout", "1"]);
    // One client sent part of its headers, another half a declared body.
    let mut partial_header = srv.connect();
    partial_header
        .write_all(b"POST /v1/models/sr/restore HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    let mut partial_body = srv.connect();
    partial_body
        .write_all(post_head("/v1/models/sr/restore", 1_000_000, "image/png").as_bytes())
        .unwrap();
    partial_body.write_all(&[0u8; 1000]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    srv.signal("-TERM");
    let status = srv
        .wait_exit(Duration::from_secs(15))
        .expect("the server did not exit after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    std::thread::sleep(Duration::from_millis(100));
    let log = srv.log();
    assert!(log.contains("\"dropped_connections\":2"), "{log}");
}

#[test]
fn slow_partial_and_idle_connections_are_cut_off() {
    let srv = tract_server(&["--header-timeout", "1", "--body-timeout", "1"]);
    let mut idle = srv.connect();
    let mut partial = srv.connect();
    partial.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n").unwrap();
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)),
        "an idle connection stayed open"
    );
    assert!(
        closed_within(&mut partial, Duration::from_secs(5)),
        "a partial header stayed open"
    );
    // Keep-alive: after an answer, the connection may idle only as long.
    let mut kept = srv.connect();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_answer(&mut kept).0, 200);
    assert!(
        closed_within(&mut kept, Duration::from_secs(5)),
        "an idle keep-alive connection stayed open"
    );
    // A body that stops arriving: 408.
    let mut slow = srv.connect();
    slow.write_all(post_head("/v1/models/sr/restore", 5000, "image/png").as_bytes())
        .unwrap();
    slow.write_all(&[0u8; 10]).unwrap();
    let (code, _, body) = read_answer(&mut slow);
    assert_eq!(code, 408, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("--body-timeout"));
}

#[test]
fn the_connection_limit_holds_and_is_logged_once() {
    let srv = tract_server(&["--max-connections", "2", "--header-timeout", "30"]);
    let a = srv.connect();
    let b = srv.connect();
    std::thread::sleep(Duration::from_millis(200));
    // A third client waits in the backlog: no answer while both slots are held.
    let mut c = srv.connect();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    c.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    let mut buf = [0u8; 16];
    assert!(c.read(&mut buf).is_err(), "answered beyond --max-connections");
    drop(a);
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(read_answer(&mut c).0, 200, "not answered once a slot was free");
    drop(b);
    let log = srv.log();
    assert_eq!(log.matches("\"event\":\"connection_limit\"").count(), 1, "{log}");
}

#[test]
fn a_declared_body_over_the_limit_is_refused_before_it_is_read_in_the_routes_format() {
    let srv = tract_server(&["--max-body-bytes", "100000"]);
    for (path, content_type, json) in [
        ("/v1/models/sr/restore", "image/png", false),
        ("/v1/models/sr/restore", "multipart/form-data; boundary=x", false),
        ("/v2/models/sr/infer", "application/json", true),
    ] {
        // 5 GB declared, nothing sent: the answer comes from the headers alone.
        let (code, headers, body) = raw(&srv, &post_head(path, 5_000_000_000, content_type), b"");
        assert_eq!(code, 413, "{path} {content_type}");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("--max-body-bytes"), "{text}");
        if json {
            assert!(headers.contains("application/json"), "{headers}");
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(v["error"].as_str().unwrap().contains("100000"));
        }
    }
    // Streamed (chunked, no length) over the limit: 413 too, multipart included.
    for content_type in ["image/png", "multipart/form-data; boundary=x"] {
        let head = format!(
            "POST /v1/models/sr/restore HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let chunk = format!("{:x}\r\n{}\r\n", 150_000, "a".repeat(150_000));
        let (code, _, body) = raw(&srv, &head, chunk.as_bytes());
        assert_eq!(code, 413, "{content_type}: {}", String::from_utf8_lossy(&body));
    }
}

/// A PNG carrying an ICC profile of `size` bytes (zeros: it compresses to almost nothing).
fn png_with_icc(dir: &Path, size: usize) -> PathBuf {
    let img = image::open(bundles_dir().join("sr_x4/input.png")).unwrap().to_rgb8();
    let mut info = png::Info::with_size(img.width(), img.height());
    info.icc_profile = Some(vec![0u8; size].into());
    let path = dir.join(format!("icc{size}.png"));
    let mut enc = png::Encoder::with_info(std::fs::File::create(&path).unwrap(), info).unwrap();
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(img.as_raw()).unwrap();
    path
}

fn icc_of(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut r = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
    let _ = r.next_frame(&mut vec![0; r.output_buffer_size().unwrap()]);
    r.info().icc_profile.as_ref().map(|p| p.to_vec())
}

#[test]
fn an_icc_profile_over_4_mib_is_dropped_with_a_note_in_the_cli_and_the_server_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let big = png_with_icc(tmp.path(), 5 << 20);
    assert!(std::fs::metadata(&big).unwrap().len() < 200_000);
    let out = tmp.path().join("out.png");
    let o = restore_on_tract(&big, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ICC profile expands past 4 MiB and was dropped"),
        "{}",
        stderr(&o)
    );
    let cli = std::fs::read(&out).unwrap();
    assert_eq!(icc_of(&cli), None);
    assert!(cli.len() < 200_000, "output of {} bytes", cli.len());
    let srv = tract_server(&[]);
    let body = std::fs::read(&big).unwrap();
    let (code, headers, served) = raw(
        &srv,
        &post_head("/v1/models/sr/restore", body.len(), "image/png"),
        &body,
    );
    assert_eq!(code, 200);
    assert!(
        headers.contains("x-diffir-note: its icc profile expands past 4 mib"),
        "{headers}"
    );
    assert_eq!(served, cli, "the server's bytes differ from the CLI's");
    // A profile within the limit is carried.
    let ok = png_with_icc(tmp.path(), 1 << 20);
    let out2 = tmp.path().join("out2.png");
    assert!(restore_on_tract(&ok, &out2, &[]).status.success());
    assert_eq!(icc_of(&std::fs::read(&out2).unwrap()).map(|p| p.len()), Some(1 << 20));
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn request_tiles_stay_within_the_servers_bounds() {
    let png = small_png();
    let srv = tract_server(&[]);
    let post = |q: &str| {
        raw(
            &srv,
            &post_head(&format!("/v1/models/sr/restore{q}"), png.len(), "image/png"),
            &png,
        )
    };
    let (code, _, body) = post("?tile=0");
    assert_eq!(code, 400);
    assert!(text(&body).contains("--allow-whole-image"), "{}", text(&body));
    let (code, _, body) = post("?tile=1");
    assert_eq!(code, 400);
    assert!(text(&body).contains("tiles allowed: 64, 128"), "{}", text(&body));
    assert_eq!(post("?tile=64").0, 200);
    drop(srv);
    // Whole images when allowed, still within the memory budget.
    let srv = tract_server(&["--allow-whole-image", "--max-memory", "64M"]);
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.png");
    image::RgbImage::from_fn(700, 700, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 9]))
        .save(&big)
        .unwrap();
    let big = std::fs::read(big).unwrap();
    let (code, _, body) = raw(
        &srv,
        &post_head("/v1/models/sr/restore?tile=0", big.len(), "image/png"),
        &big,
    );
    assert_eq!(code, 413, "{}", text(&body));
    assert!(text(&body).contains("whole-image needs about"), "{}", text(&body));
    let (code, _, _) = raw(
        &srv,
        &post_head("/v1/models/sr/restore?tile=0", png.len(), "image/png"),
        &png,
    );
    assert_eq!(code, 200);
}

#[test]
fn protocol_corners_are_answered_by_the_rules() {
    let png = small_png();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "tok").unwrap();
    let srv = tract_server(&["--token-file", s(&token)]);
    let auth = |scheme: &str| format!("Authorization: {scheme} tok\r\n");
    // The scheme name in any case.
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let head = format!(
            "GET /v1/models HTTP/1.1\r\nHost: t\r\n{}Connection: close\r\n\r\n",
            auth(scheme)
        );
        assert_eq!(raw(&srv, &head, b"").0, 200, "{scheme}");
    }
    let with_auth = |head: String| head.replacen("\r\n", &format!("\r\n{}", auth("Bearer")), 1);
    let get = |path: &str| {
        raw(
            &srv,
            &with_auth(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")),
            b"",
        )
    };
    assert_eq!(get("/v2").0, 200);
    assert_eq!(get("/v2/models/sr/ready").0, 200);
    assert_eq!(get("/v2/models/sr/versions/1").0, 200);
    assert_eq!(get("/v2/models/sr/versions/1/ready").0, 200);
    let (code, _, body) = get("/v2/models/sr/versions/2");
    assert_eq!(code, 404, "{}", text(&body));
    // Duplicate multipart parts.
    let part = |name: &str| {
        let mut p =
            format!("--x\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"a.png\"\r\n\r\n").into_bytes();
        p.extend_from_slice(&png);
        p.extend_from_slice(b"\r\n");
        p
    };
    let mut body = [part("image"), part("image")].concat();
    body.extend_from_slice(b"--x--\r\n");
    let head = with_auth(post_head(
        "/v1/models/sr/restore",
        body.len(),
        "multipart/form-data; boundary=x",
    ));
    let (code, _, msg) = raw(&srv, &head, &body);
    assert_eq!(code, 400);
    assert!(text(&msg).contains("given twice"), "{}", text(&msg));
    // KServe: duplicate and extra inputs, the binary extension, seeds.
    let input = |name: &str| serde_json::json!({"name": name, "shape": [1], "datatype": "BYTES", "data": [b64]});
    let infer = |v: serde_json::Value| {
        let body = serde_json::to_vec(&v).unwrap();
        raw(
            &srv,
            &with_auth(post_head("/v2/models/sr/infer", body.len(), "application/json")),
            &body,
        )
    };
    let (code, _, msg) = infer(serde_json::json!({"inputs": [input("image"), input("image")]}));
    assert_eq!(code, 400);
    assert!(text(&msg).contains("given twice"), "{}", text(&msg));
    let (code, _, msg) = infer(serde_json::json!({"inputs": [input("image"), input("extra")]}));
    assert_eq!(code, 400);
    assert!(text(&msg).contains("unknown input 'extra'"), "{}", text(&msg));
    let binary = serde_json::json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
        "parameters": {"binary_data_size": 10}}]});
    let (code, _, msg) = infer(binary);
    assert_eq!(code, 400);
    assert!(text(&msg).contains("binary data extension"), "{}", text(&msg));
    let (code, _, msg) = infer(serde_json::json!({"inputs": [input("image")], "parameters": {"seed": 1e20}}));
    assert_eq!(code, 400);
    assert!(
        text(&msg).contains("0 to 18446744073709551615") && !text(&msg).contains("floating"),
        "{}",
        text(&msg)
    );
    let (code, _, _) = infer(serde_json::json!({"inputs": [input("image")], "parameters": {"seed": 7}}));
    assert_eq!(code, 200);
    // Client text comes back escaped: no raw NUL or newline.
    let (code, _, msg) = raw(
        &srv,
        &with_auth(post_head(
            "/v1/models/sr/restore?format=a%00b%0Aerror:x",
            png.len(),
            "image/png",
        )),
        &png,
    );
    assert_eq!(code, 400);
    assert!(
        !msg[..msg.len() - 1].contains(&0) && !msg[..msg.len() - 1].contains(&b'\n'),
        "{:?}",
        text(&msg)
    );
    assert!(text(&msg).contains("\\x00"), "{}", text(&msg));
}

#[test]
fn tract_plans_are_bounded_and_counted_in_metrics() {
    let srv = tract_server(&[]);
    // Padded to the model's size multiple, these are 24 distinct shapes (each a CPEN and a backbone plan).
    for k in 0..24u32 {
        let (w, h) = (16 + 8 * (k / 2), 16 + 8 * (k % 2));
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 9) as u8, (y * 5) as u8, 3]));
        let mut png = vec![];
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let (code, _, _) = raw(&srv, &post_head("/v1/models/sr/restore", png.len(), "image/png"), &png);
        assert_eq!(code, 200);
    }
    let (_, _, m) = raw(
        &srv,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"",
    );
    let m = text(&m);
    let line = m
        .lines()
        .find(|l| l.starts_with("diffir_cached_plans{"))
        .unwrap_or_else(|| panic!("{m}"));
    let n: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(n, diffir::internal::backend::tract::PLAN_CACHE_ENTRIES, "{line}");
}

/// A folder of `n` slow inputs (each takes a while on tract with one thread).
fn slow_folder(dir: &Path, n: usize) -> PathBuf {
    let d = dir.join("in");
    std::fs::create_dir_all(&d).unwrap();
    for k in 0..n {
        image::RgbImage::from_fn(160, 160, |x, y| {
            image::Rgb([((x * 7 + k as u32) % 256) as u8, (y % 256) as u8, 5])
        })
        .save(d.join(format!("{k:02}.png")))
        .unwrap();
    }
    d
}

#[test]
fn ctrl_c_stops_the_batch_cleanly_with_a_summary_and_exit_130() {
    let tmp = tempfile::tempdir().unwrap();
    let input = slow_folder(tmp.path(), 6);
    let out = tmp.path().join("out");
    let child = spawn_restore(&["--threads", "1", "--tile", "64", s(&input), "-o", s(&out)]);
    // Interrupt once the first output is written (the second is then being restored).
    let deadline = Instant::now() + Duration::from_secs(120);
    while !out.join("00.png").exists() {
        assert!(Instant::now() < deadline, "no output appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(stderr(&o).contains("interrupted: "), "{}", stderr(&o));
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.iter().all(|n| n.to_string_lossy().ends_with(".png")), "{left:?}");
    assert!(left.len() < 6, "{left:?}");
}

#[test]
fn a_file_size_limit_fails_the_write_and_leaves_no_temporary_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let input = bundles_dir().join("sr_x4/input.png");
    let script = format!(
        "ulimit -f 1; exec {} restore -n {} --backend tract {} -o {}/big.png",
        env!("CARGO_BIN_EXE_diffir"),
        s(&bundles_dir().join("sr_x4")),
        s(&input),
        s(&out)
    );
    let o = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("big.png"), "{}", stderr(&o));
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn fifos_are_skipped_and_names_are_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::copy(bundles_dir().join("sr_x4/input.png"), input.join("a.png")).unwrap();
    let fifo = input.join("blocks.png");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    std::fs::write(input.join("x\nerror: forged\x1b[31m.png"), b"not an image").unwrap();
    let out = tmp.path().join("out");
    let mut child = spawn_restore(&[s(&input), "-o", s(&out)]);
    let status = wait_child(&mut child, Duration::from_secs(120)).expect("the batch hung on the FIFO");
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("blocks.png: skipped (not a regular file"), "{err}");
    assert!(err.contains("x\\nerror: forged\\x1b[31m.png"), "{err}");
    assert!(
        !err.contains('\x1b') && !err.lines().any(|l| l.starts_with("error: forged")),
        "{err:?}"
    );
    assert!(out.join("a.png").exists());
}

#[test]
fn triton_urls_are_checked_before_connecting() {
    let input = bundles_dir().join("sr_x4/input.png");
    let tmp = tempfile::tempdir().unwrap();
    for (url, says) in [
        ("grpc://127.0.0.1:65536", "not a number from 1 to 65535"),
        ("grpc://127.0.0.1", "no port"),
        ("grpc://user:hunter2@127.0.0.1:8001", "not supported"),
    ] {
        let start = Instant::now();
        let o = diffir(
            &[
                "restore",
                s(&input),
                "-o",
                s(&tmp.path().join("o.png")),
                "--triton-url",
                url,
            ],
            &[],
        );
        assert_eq!(o.status.code(), Some(2), "{url}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{url}: {}", stderr(&o));
        assert!(!stderr(&o).contains("hunter2"), "{}", stderr(&o));
        assert!(start.elapsed() < Duration::from_secs(5), "{url}: {:?}", start.elapsed());
    }
}

#[test]
fn no_cache_writes_nothing_to_the_cache_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let input = bundles_dir().join("sr_x4/input.png");
    let bundle = bundles_dir().join("sr_x4");
    let run = |extra: &[&str]| {
        let out = tmp.path().join("o.png");
        let mut args = vec!["restore", "-n", s(&bundle), "--backend", "ort-cpu"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[s(&input), "-o", s(&out), "--overwrite"]);
        let lib = diffir::internal::backend::ort::install_dir().join("libonnxruntime.so.1.31.1");
        let envs = [
            ("DIFFIR_CACHE_DIR", s(&cache)),
            ("HOME", s(tmp.path())),
            ("ORT_DYLIB_PATH", s(&lib)),
        ];
        let o = diffir(&args, &envs);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    run(&["--no-cache"]);
    assert!(!cache.exists() || std::fs::read_dir(&cache).unwrap().next().is_none());
    assert!(!tmp.path().join(".cache").exists(), "something wrote under HOME/.cache");
    run(&[]);
    assert!(cache.exists(), "without --no-cache the optimised graphs are cached");
}

#[test]
fn a_whole_image_run_past_its_deadline_is_terminated_inside_onnxruntime() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let bundle = load("sr_x4");
    let opts = diffir::RestoreOptions {
        backend: diffir::BackendKind::OrtCpu,
        threads: 1,
        ..Default::default()
    };
    let pipeline = diffir::Pipeline::open(bundle, &opts).unwrap();
    let image = photo(384, 384);
    let whole = diffir::Tiling { tile: 0, overlap: 0 };
    let noise = vec![0.0f32; pipeline.bundle().ipr_dim()];
    // A warm-up run first (onnxruntime's first run at a shape is slower), then the one that is timed.
    pipeline.restore(&image, None, &noise, &whole).unwrap();
    let start = Instant::now();
    pipeline.restore(&image, None, &noise, &whole).unwrap();
    let full = start.elapsed();
    let cancel = AtomicBool::new(false);
    let start = Instant::now();
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            // Well into the backbone (CPEN and the diffusion are a small part of a whole-image run).
            std::thread::sleep(full * 2 / 5);
            cancel.store(true, Ordering::Relaxed);
        });
        pipeline.restore_cancellable(&image, None, &noise, &whole, &cancel)
    });
    let stopped = start.elapsed();
    assert!(matches!(r, Err(diffir::Error::Cancelled)), "{:?}", r.map(|_| ()));
    eprintln!("whole image: {full:?}; cancelled after {stopped:?}");
    // Without termination inside the run it would end with the run, at about `full`.
    assert!(stopped < full * 3 / 4, "stopped after {stopped:?} of a {full:?} run");
}
