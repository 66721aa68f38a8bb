//! bundle.yaml parsing and validation on arbitrary text, with the real graphs of the sr_x4 fixture:
//! any input must give Ok or a clean error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

const GRAPHS: [(&str, &[u8]); 5] = [
    ("cpen.onnx", include_bytes!("../../tests/fixtures/bundles/sr_x4/cpen.onnx")),
    ("denoiser.onnx", include_bytes!("../../tests/fixtures/bundles/sr_x4/denoiser.onnx")),
    ("backbone.onnx", include_bytes!("../../tests/fixtures/bundles/sr_x4/backbone.onnx")),
    ("cpen_features.onnx", include_bytes!("../../tests/fixtures/bundles/sr_x4/cpen_features.onnx")),
    ("cpen_head.onnx", include_bytes!("../../tests/fixtures/bundles/sr_x4/cpen_head.onnx")),
];

fuzz_target!(|data: &[u8]| {
    // Half the time mutate graph bytes too: the first byte picks a graph, the rest of the input after a NUL
    // overwrites its start.
    let (yaml, patch) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let Ok(text) = std::str::from_utf8(yaml) else { return };
    let _ = diffir::Bundle::from_parts("fuzz", text, |file| {
        let bytes = GRAPHS
            .iter()
            .find(|(n, _)| *n == file)
            .map(|(_, b)| b.to_vec())
            .ok_or_else(|| diffir::Error::Shape(format!("no file {file}")))?;
        let mut bytes = bytes;
        if let Some(p) = patch {
            let n = p.len().min(bytes.len());
            bytes[..n].copy_from_slice(&p[..n]);
        }
        Ok((file.into(), bytes))
    });
});
