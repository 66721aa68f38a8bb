//! `diffir serve` against a real server process on 127.0.0.1 (port chosen by the OS): outputs identical to
//! the CLI's, KServe v2, concurrency, the queue, limits, auth, deadlines, metrics and graceful shutdown.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::common::*;
use crate::server::{tract_server, Server};

/// (status, headers we look at, body) of a request; error statuses are answers too.
fn call(req: ureq::Request, body: Option<&[u8]>) -> (u16, Option<String>, Vec<u8>) {
    let r = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = resp.status();
    let retry = resp.header("retry-after").map(str::to_string);
    let mut out = vec![];
    resp.into_reader().read_to_end(&mut out).unwrap();
    (status, retry, out)
}

fn post(url: &str, body: &[u8]) -> (u16, Option<String>, Vec<u8>) {
    call(ureq::post(url), Some(body))
}

/// The CLI's output bytes for `input` (written as `ext`) with the sr_x4 bundle on tract.
fn cli_bytes(input: &Path, ext: &str, extra: &[&str]) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join(format!("out.{ext}"));
    let o = restore_on_tract(input, &out, extra);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::read(out).unwrap()
}

/// A textured 8-bit image large enough that restoring it takes a while (tiled, on tract).
fn slow_input(dir: &Path) -> PathBuf {
    let path = dir.join("slow.png");
    image::RgbImage::from_fn(192, 192, |x, y| {
        image::Rgb([
            ((x * 7 + y * 3) % 256) as u8,
            ((x * y) % 251) as u8,
            ((x ^ y) * 5 % 256) as u8,
        ])
    })
    .save(&path)
    .unwrap();
    path
}

/// `GET /v1/models` names what runs each model: the provider that started, not the one asked for.
#[test]
fn the_model_list_names_what_runs() {
    let srv = tract_server(&[]);
    let (status, _, body) = call(ureq::get(&srv.url("/v1/models")), None);
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["models"][0]["runs_on"], "tract", "{v}");
}

#[test]
fn http_restore_is_byte_identical_to_the_cli() {
    let srv = tract_server(&[]);
    let png = bundles_dir().join("sr_x4/input.png");
    let (status, _, body) = post(&srv.url("/v1/models/sr/restore?seed=3"), &std::fs::read(&png).unwrap());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, cli_bytes(&png, "png", &["--seed", "3", "--threads", "1"]));
    // 16-bit TIFF in, 16-bit TIFF out (the input's format by default).
    let tmp = tempfile::tempdir().unwrap();
    let tif = tmp.path().join("in.tif");
    image::open(repo().join("tests/fixtures/images/rgb16.png"))
        .unwrap()
        .save(&tif)
        .unwrap();
    let (status, _, body) = post(&srv.url("/v1/models/sr/restore"), &std::fs::read(&tif).unwrap());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, cli_bytes(&tif, "tif", &["--threads", "1"]));
    assert_eq!(image::load_from_memory(&body).unwrap().color(), image::ColorType::Rgb16);
    // Output format from the query.
    let (status, _, body) = post(
        &srv.url("/v1/models/sr/restore?format=webp"),
        &std::fs::read(&png).unwrap(),
    );
    assert_eq!(status, 200);
    assert_eq!(body, cli_bytes(&png, "webp", &["--threads", "1"]));
}

#[test]
fn inpainting_takes_a_multipart_body() {
    let model = format!("fill={}", bundles_dir().join("inpaint").display());
    let srv = Server::start(&["--model", &model, "--backend", "tract", "--threads", "1"]);
    let dir = bundles_dir().join("inpaint");
    let (image, mask) = (
        std::fs::read(dir.join("input.png")).unwrap(),
        std::fs::read(dir.join("mask.png")).unwrap(),
    );
    let boundary = "diffir-test-boundary";
    let mut body = vec![];
    for (name, data) in [("image", &image), ("mask", &mask)] {
        body.extend(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.png\"\r\n\
                 Content-Type: image/png\r\n\r\n"
            )
            .bytes(),
        );
        body.extend(data.iter());
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").bytes());
    let req = ureq::post(&srv.url("/v1/models/fill/restore"))
        .set("Content-Type", &format!("multipart/form-data; boundary={boundary}"));
    let (status, _, got) = call(req, Some(&body));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&got));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o.png");
    let o = diffir(
        &[
            "restore",
            s(&dir.join("input.png")),
            "-o",
            s(&out),
            "--model",
            s(&dir),
            "--mask",
            s(&dir.join("mask.png")),
            "--backend",
            "tract",
            "--threads",
            "1",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(got, std::fs::read(out).unwrap());
    // Without the mask: 400, saying how to send it.
    let (status, _, msg) = post(&srv.url("/v1/models/fill/restore"), &image);
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&msg).contains("multipart"),
        "{}",
        String::from_utf8_lossy(&msg)
    );
}

#[test]
fn kserve_v2_gives_the_same_bytes() {
    let srv = tract_server(&[]);
    let png = bundles_dir().join("sr_x4/input.png");
    let b64 = base64::engine::general_purpose::STANDARD;
    let request = serde_json::json!({
        "id": "req-1",
        "parameters": {"seed": 3},
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64.encode(std::fs::read(&png).unwrap())]}],
    });
    let (status, _, body) = post(&srv.url("/v2/models/sr/infer"), request.to_string().as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["model_name"], "sr");
    assert_eq!(v["id"], "req-1");
    let out = &v["outputs"][0];
    assert_eq!(
        (out["name"].as_str(), out["datatype"].as_str()),
        (Some("output"), Some("BYTES"))
    );
    let bytes = b64.decode(out["data"][0].as_str().unwrap()).unwrap();
    assert_eq!(bytes, cli_bytes(&png, "png", &["--seed", "3", "--threads", "1"]));
    // Metadata and health.
    let (status, _, meta) = call(ureq::get(&srv.url("/v2/models/sr")), None);
    assert_eq!(status, 200);
    let meta: serde_json::Value = serde_json::from_slice(&meta).unwrap();
    assert_eq!(meta["name"], "sr");
    assert_eq!(meta["inputs"][0]["datatype"], "BYTES");
    for path in ["/v2/health/live", "/v2/health/ready", "/healthz", "/readyz"] {
        assert_eq!(call(ureq::get(&srv.url(path)), None).0, 200, "{path}");
    }
    // Errors in the protocol's JSON.
    let (status, _, body) = post(&srv.url("/v2/models/nope/infer"), request.to_string().as_bytes());
    assert_eq!(status, 404);
    assert!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["error"].is_string());
    let (status, _, _) = post(&srv.url("/v2/models/sr/infer"), b"{\"inputs\": []}");
    assert_eq!(status, 400);
}

#[test]
fn sixteen_concurrent_requests_all_come_back_correct() {
    let srv = tract_server(&["--max-concurrency", "2", "--queue", "32"]);
    let png = bundles_dir().join("sr_x4/input.png");
    let want = cli_bytes(&png, "png", &["--seed", "1", "--threads", "1"]);
    let data = std::fs::read(&png).unwrap();
    let url = srv.url("/v1/models/sr/restore?seed=1");
    let answers: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16).map(|_| s.spawn(|| post(&url, &data))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, _, body) in answers {
        assert_eq!(status, 200);
        assert_eq!(body, want);
    }
    // /metrics counted them.
    let (_, _, m) = call(ureq::get(&srv.url("/metrics")), None);
    let m = String::from_utf8(m).unwrap();
    assert!(m.contains("diffir_requests_total{code=\"200\",model=\"sr\"} 16"), "{m}");
    assert!(
        m.contains("diffir_request_duration_seconds_count{model=\"sr\"} 16"),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "diffir_pixels_processed_total{{model=\"sr\"}} {}",
            16 * 21 * 30
        )),
        "{m}"
    );
    assert!(
        m.contains("diffir_in_flight_requests 0") && m.contains("diffir_queue_depth 0"),
        "{m}"
    );
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let srv = tract_server(&["--max-concurrency", "1", "--queue", "1"]);
    let tmp = tempfile::tempdir().unwrap();
    let data = std::fs::read(slow_input(tmp.path())).unwrap();
    let url = srv.url("/v1/models/sr/restore");
    let answers: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..5).map(|_| s.spawn(|| post(&url, &data))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let busy: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    assert!(
        ok >= 1 && !busy.is_empty(),
        "{:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    assert_eq!(ok + busy.len(), 5);
    assert!(
        busy.iter().all(|a| a.1.as_deref() == Some("1")),
        "Retry-After on every 503"
    );
    // The server is still up and serves again.
    let small = std::fs::read(bundles_dir().join("sr_x4/input.png")).unwrap();
    assert_eq!(post(&url, &small).0, 200);
}

#[test]
fn bad_requests_get_clear_answers() {
    let srv = tract_server(&["--max-body-bytes", "200000", "--max-pixels", "1000"]);
    let url = srv.url("/v1/models/sr/restore");
    let (status, _, msg) = post(&url, b"this is not an image");
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&msg).contains("not an image"),
        "{}",
        String::from_utf8_lossy(&msg)
    );
    // Bodies over --max-body-bytes: tests/it/hostile.rs (over raw sockets, as a client that keeps sending
    // after the refusal would see a reset).
    let tmp = tempfile::tempdir().unwrap();
    let (status, _, msg) = post(&url, &std::fs::read(slow_input(tmp.path())).unwrap());
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&msg));
    assert!(String::from_utf8_lossy(&msg).contains("--max-pixels"));
    let small = std::fs::read(bundles_dir().join("sr_x4/input.png")).unwrap();
    assert_eq!(post(&srv.url("/v1/models/nope/restore"), &small).0, 404);
    assert_eq!(post(&format!("{url}?format=gif"), &small).0, 400);
    assert_eq!(post(&format!("{url}?seed=x"), &small).0, 400);
    assert_eq!(post(&url, b"").0, 400);
    // Nothing broke: a good request still works, and no temporary file was written anywhere near.
    assert_eq!(post(&url, &small).0, 200);
}

#[test]
fn tokens_are_required_when_configured() {
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let srv = tract_server(&["--token-file", s(&token_file)]);
    let url = srv.url("/v1/models/sr/restore");
    let small = std::fs::read(bundles_dir().join("sr_x4/input.png")).unwrap();
    assert_eq!(post(&url, &small).0, 401, "missing token");
    let wrong = ureq::post(&url).set("Authorization", "Bearer s3cret-tokeN");
    assert_eq!(call(wrong, Some(&small)).0, 401, "wrong token");
    let right = ureq::post(&url).set("Authorization", "Bearer s3cret-token");
    assert_eq!(call(right, Some(&small)).0, 200);
    assert_eq!(call(ureq::get(&srv.url("/v1/models")), None).0, 401);
    // Health checks stay open for load balancers and orchestrators.
    assert_eq!(call(ureq::get(&srv.url("/healthz")), None).0, 200);
    assert_eq!(call(ureq::get(&srv.url("/v2/health/ready")), None).0, 200);
}

#[test]
fn a_request_past_its_deadline_gets_504() {
    let srv = tract_server(&["--request-timeout", "0.05"]);
    let tmp = tempfile::tempdir().unwrap();
    let data = std::fs::read(slow_input(tmp.path())).unwrap();
    let (status, _, msg) = post(&srv.url("/v1/models/sr/restore"), &data);
    assert_eq!(status, 504, "{}", String::from_utf8_lossy(&msg));
    assert!(String::from_utf8_lossy(&msg).contains("abandoned"));
    // The abandoned work stops between tiles and frees its worker: the server answers again.
    let (_, _, m) = call(ureq::get(&srv.url("/metrics")), None);
    assert!(String::from_utf8_lossy(&m).contains("code=\"504\""));
}

#[test]
fn sigterm_finishes_the_requests_in_flight() {
    let srv = tract_server(&["--max-concurrency", "2"]);
    let tmp = tempfile::tempdir().unwrap();
    let data = std::fs::read(slow_input(tmp.path())).unwrap();
    let url = srv.url("/v1/models/sr/restore");
    let metrics = srv.url("/metrics");
    let answers = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2).map(|_| s.spawn(|| post(&url, &data))).collect();
        // Wait until both restores run, then ask the server to stop.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, _, m) = call(ureq::get(&metrics), None);
            if String::from_utf8_lossy(&m).contains("diffir_in_flight_requests 2") {
                break;
            }
            assert!(Instant::now() < deadline, "the restores never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = srv.terminate();
        let answers: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (status, answers)
    });
    let (status, answers) = answers;
    assert!(status.success(), "exit status {status:?}");
    for (code, _, body) in answers {
        assert_eq!(code, 200);
        assert!(image::load_from_memory(&body).is_ok());
    }
}
