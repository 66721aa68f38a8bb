//! File names and client text as they appear in messages: control characters and bytes that are not UTF-8
//! are shown escaped (`\n`, `\x1b`, `\xff`), so a name can neither forge a line of output nor reach the
//! terminal as an escape sequence.

use std::path::Path;

/// `path` for a message, escaped.
pub fn escaped(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = path.as_os_str().as_bytes();
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        push_escaped(&mut out, chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// `text` for a message, with its control characters escaped.
pub fn escaped_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_escaped(&mut out, text);
    out
}

fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_invalid_bytes_are_escaped() {
        use std::os::unix::ffi::OsStrExt as _;
        let p = Path::new(std::ffi::OsStr::from_bytes(b"a\nerror: forged\x1b[31m\xff\0.png"));
        assert_eq!(escaped(p), "a\\nerror: forged\\x1b[31m\\xff\\x00.png");
        assert_eq!(escaped_text("tab\there\u{7f}"), "tab\\there\\x7f");
        assert_eq!(escaped(Path::new("plain/é.png")), "plain/é.png");
    }
}
