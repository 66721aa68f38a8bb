//! Bad bundles: every problem is a clear error naming the file and the field, never a panic.

use diffir::Bundle;

use crate::common::*;

fn load_err(dir: &std::path::Path) -> String {
    Bundle::load(dir)
        .map(|_| ())
        .expect_err("bundle should be rejected")
        .to_string()
}

fn edit_yaml(dir: &std::path::Path, from: &str, to: &str) {
    let p = dir.join("bundle.yaml");
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "fixture yaml lacks '{from}'");
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn unknown_fields_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    copy_bundle("sr_x4", tmp.path());
    edit_yaml(tmp.path(), "scale: 4\n", "scale: 4\ncolour: blue\n");
    let e = load_err(tmp.path());
    assert!(e.contains("bundle.yaml") && e.contains("colour"), "{e}");
}

#[test]
fn contradictions_name_the_field() {
    let cases = [
        ("scale: 4\ninput", "scale: 2\ninput", "scale"),
        ("input_channels: 3", "input_channels: 4", "input_channels"),
        ("size_multiple: 8", "size_multiple: 16", "size_multiple"),
        ("padding: reflect", "padding: symmetric", "padding"),
        ("coef2: [0.0, 0.230", "coef2: [0.0, 0.231", "schedule.coef1/coef2"),
        (
            "inputs: [x, t, condition]",
            "inputs: [x, condition, t]",
            "graphs.denoiser",
        ),
        ("format: 1", "format: 9", "format 9"),
    ];
    for (from, to, needle) in cases {
        let tmp = tempfile::tempdir().unwrap();
        copy_bundle("sr_x4", tmp.path());
        edit_yaml(tmp.path(), from, to);
        let e = load_err(tmp.path());
        assert!(e.contains(needle), "{from} -> {to}: {e}");
    }
}

#[test]
fn missing_and_corrupt_graphs_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    copy_bundle("sr_x4", tmp.path());
    std::fs::remove_file(tmp.path().join("denoiser.onnx")).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("denoiser.onnx"), "{e}");
    std::fs::write(tmp.path().join("denoiser.onnx"), b"\x08\x07garbage-not-onnx\xff\xff").unwrap();
    let e = load_err(tmp.path());
    assert!(
        e.contains("denoiser.onnx") && e.contains("not a readable ONNX model"),
        "{e}"
    );
}

#[test]
fn a_graph_from_another_model_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    copy_bundle("sr_x4", tmp.path());
    // The inpainting CPEN takes 4 channels; this bundle declares 3.
    std::fs::copy(bundles_dir().join("inpaint/cpen.onnx"), tmp.path().join("cpen.onnx")).unwrap();
    let e = load_err(tmp.path());
    assert!(
        e.contains("cpen.onnx") && e.contains("4 channels but bundle.yaml implies 3"),
        "{e}"
    );
    // Swapped graphs: the declared inputs no longer match.
    copy_bundle("sr_x4", tmp.path());
    std::fs::copy(bundles_dir().join("sr_x4/cpen.onnx"), tmp.path().join("backbone.onnx")).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("backbone.onnx") && e.contains("inputs [\"image\"]"), "{e}");
}

#[test]
fn not_a_bundle_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let e = load_err(&tmp.path().join("nope"));
    assert!(e.contains("not a model bundle folder"), "{e}");
    let e = load_err(tmp.path());
    assert!(e.contains("bundle.yaml"), "{e}");
}
