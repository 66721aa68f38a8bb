//! The machine's memory as the planner sees it: what this process may still use (the kernel's figure, or
//! less under a cgroup limit), and byte counts as people write and read them.

/// Memory available to this process, in bytes: the kernel's MemAvailable, lowered to the room left under a
/// cgroup v2 limit where there is one. None where neither can be read.
pub fn available_memory() -> Option<u64> {
    let available = kib_field("/proc/meminfo", "MemAvailable:");
    let read = |f: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{f}")).ok();
    let cgroup = match (read("memory.max"), read("memory.current")) {
        (Some(max), Some(cur)) => match (max.trim().parse::<u64>(), cur.trim().parse::<u64>()) {
            (Ok(max), Ok(cur)) => Some(max.saturating_sub(cur)),
            _ => None,
        },
        _ => None,
    };
    match (available, cgroup) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

/// What this process may still allocate: [`available_memory`], lowered to the address space left under
/// its own limit (`ulimit -v`, RLIMIT_AS) where it has one. None where nothing can be read.
pub fn room() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    let address_space = (unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } == 0
        && limit.rlim_cur != libc::RLIM_INFINITY)
        .then(|| {
            let used = kib_field("/proc/self/status", "VmSize:").unwrap_or(0);
            limit.rlim_cur.saturating_sub(used)
        });
    match (available_memory(), address_space) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The bytes of a `KEY: N kB` line of a /proc file, where it can be read.
fn kib_field(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let value = text.lines().find_map(|l| l.strip_prefix(key))?;
    let kib = value.trim().trim_end_matches("kB").trim().parse::<u64>().ok()?;
    Some(kib * 1024)
}

/// A byte count as `--max-memory` takes it: a number with an optional unit, K/M/G/T (also KiB… and
/// KB…, all powers of 1024) or B.
pub fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a size (for example 8G, 512M or 2.5GiB)"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        other => return Err(format!("'{s}': unknown unit '{other}' (B, K, M, G or T)")),
    };
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 1.0 {
        return Err(format!("'{s}' is not a positive size"));
    }
    Ok(bytes as u64)
}

/// A byte count in MiB, GiB from 1 GiB on, and bytes or KiB below 1 MiB (a limit of 1 is no "0 MiB").
pub fn size(bytes: f64) -> String {
    if bytes >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", bytes / (1u64 << 30) as f64)
    } else if bytes < 1024.0 {
        format!("{bytes:.0} B")
    } else if bytes < (1u64 << 20) as f64 {
        format!("{:.0} KiB", bytes / 1024.0)
    } else {
        format!("{:.0} MiB", bytes / (1u64 << 20) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse() {
        assert_eq!(parse_bytes("8G").unwrap(), 8 << 30);
        assert_eq!(parse_bytes("512M").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("2.5GiB").unwrap(), 5 << 29);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert_eq!(parse_bytes("64 kb").unwrap(), 64 << 10);
        assert!(parse_bytes("8X").unwrap_err().contains("unit"));
        assert!(parse_bytes("G").is_err());
        assert!(parse_bytes("0").is_err());
    }

    #[test]
    fn available_memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let a = available_memory().expect("MemAvailable in /proc/meminfo");
            assert!(a > 16 << 20, "{a}");
        }
    }
}
