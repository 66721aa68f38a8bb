//! NVIDIA GPUs as CUDA numbers them. `nvidia-smi` and /proc/driver/nvidia list devices in PCI order and
//! ignore `CUDA_VISIBLE_DEVICES`, while device N of CUDA (and of onnxruntime's `device_id`) is the N-th
//! entry of `CUDA_VISIBLE_DEVICES`. This module maps one onto the other by UUID, so that the free memory a
//! plan reads and the name a TensorRT cache is keyed by belong to the device that runs.
//!
//! Indices in `CUDA_VISIBLE_DEVICES` are taken in nvidia-smi's (PCI) order, which is CUDA's order under
//! `CUDA_DEVICE_ORDER=PCI_BUS_ID` and on machines of one GPU model; UUIDs (`GPU-…`, `MIG-…`, or a unique
//! prefix of one, as CUDA takes them) are exact.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// One device as nvidia-smi lists it: a whole GPU, or a MIG instance of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    /// nvidia-smi's index of the (parent) GPU: its PCI order.
    pub index: usize,
    /// `GPU-…` or `MIG-…`.
    pub uuid: String,
    /// The model, e.g. "NVIDIA H200" (a MIG instance: its parent's model and its profile).
    pub name: String,
    /// Total and free memory in MiB, where nvidia-smi reports them (not for MIG instances).
    pub memory: Option<(u64, u64)>,
}

/// The devices of this machine and the ones CUDA shows this process.
#[derive(Debug, Clone, Default)]
pub struct Devices {
    /// What nvidia-smi listed (GPUs, then MIG instances), None where it did not answer.
    listed: Option<Vec<Gpu>>,
    /// `CUDA_VISIBLE_DEVICES`, when set.
    visible: Option<String>,
    /// GPUs the driver's /proc entries or /dev/nvidiaN show, for machines without nvidia-smi.
    driver_count: usize,
    /// Model names from /proc/driver/nvidia/gpus, in PCI order.
    proc_names: Vec<String>,
}

impl Devices {
    /// Ask this machine: `nvidia-smi` on PATH, `CUDA_VISIBLE_DEVICES`, /proc/driver/nvidia and /dev.
    pub fn probe() -> Devices {
        Devices::probe_with(
            OsStr::new("nvidia-smi"),
            std::env::var("CUDA_VISIBLE_DEVICES").ok(),
            Path::new("/proc/driver/nvidia/gpus"),
            Path::new("/dev"),
        )
    }

    /// `probe` with each source given (for tests: a fake nvidia-smi, a fake /proc and /dev).
    pub fn probe_with(nvidia_smi: &OsStr, visible: Option<String>, proc_gpus: &Path, dev: &Path) -> Devices {
        let proc_names = proc_names(proc_gpus);
        let dev_count = std::fs::read_dir(dev).map_or(0, |rd| {
            rd.flatten()
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.strip_prefix("nvidia")
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                })
                .count()
        });
        Devices {
            listed: query(nvidia_smi),
            visible,
            driver_count: proc_names.len().max(dev_count),
            proc_names,
        }
    }

    /// From parts already read (tests).
    pub fn from_listing(listed: Option<Vec<Gpu>>, visible: Option<&str>) -> Devices {
        Devices {
            listed,
            visible: visible.map(str::to_string),
            ..Devices::default()
        }
    }

    /// Whether this machine has an NVIDIA GPU: nvidia-smi lists one, or the driver shows one.
    pub fn any(&self) -> bool {
        self.listed.as_ref().is_some_and(|l| !l.is_empty()) || self.driver_count > 0
    }

    /// How many devices CUDA shows this process (`--device all`).
    pub fn count(&self) -> usize {
        match (&self.visible, &self.listed) {
            (Some(v), Some(listed)) => visible(listed, v).len(),
            // Without nvidia-smi the entries cannot be checked: count them as CUDA parses them.
            (Some(v), None) => visible_entries(v).len(),
            (None, Some(listed)) => listed.iter().filter(|g| g.uuid.starts_with("GPU-")).count(),
            (None, None) => self.driver_count,
        }
    }

    /// The device CUDA numbers `ordinal` in this process, where nvidia-smi lists it.
    pub fn get(&self, ordinal: i32) -> Option<&Gpu> {
        let listed = self.listed.as_ref()?;
        let ordinal = usize::try_from(ordinal).ok()?;
        match &self.visible {
            Some(v) => visible(listed, v).get(ordinal).copied(),
            None => listed.iter().filter(|g| g.uuid.starts_with("GPU-")).nth(ordinal),
        }
    }

    /// Free memory of CUDA device `ordinal`, in bytes; None where it cannot be learnt (no nvidia-smi, a MIG
    /// instance).
    pub fn free_bytes(&self, ordinal: i32) -> Option<u64> {
        self.get(ordinal).and_then(|g| g.memory).map(|(_, free)| free << 20)
    }

    /// The model name of CUDA device `ordinal`: from nvidia-smi, else from the driver's /proc entries where
    /// no `CUDA_VISIBLE_DEVICES` renumbers the devices; "unknown" otherwise.
    pub fn name(&self, ordinal: i32) -> String {
        if let Some(g) = self.get(ordinal) {
            return g.name.clone();
        }
        match (&self.visible, usize::try_from(ordinal)) {
            (None, Ok(i)) if self.listed.is_none() => self.proc_names.get(i).cloned(),
            _ => None,
        }
        .unwrap_or_else(|| "unknown".into())
    }

    /// One line per device CUDA shows this process: its number, name, UUID and memory.
    pub fn describe(&self) -> Vec<String> {
        (0..self.count() as i32)
            .map(|i| match self.get(i) {
                Some(g) => {
                    let memory = g.memory.map_or(String::new(), |(total, free)| {
                        format!(", {free} MiB free of {total} MiB")
                    });
                    format!(
                        "cuda:{i} = {} ({}, nvidia-smi index {}{memory})",
                        g.name, g.uuid, g.index
                    )
                }
                None => format!("cuda:{i} = {}", self.name(i)),
            })
            .collect()
    }
}

/// The entries of `CUDA_VISIBLE_DEVICES` as CUDA reads them: up to the first empty one or `-1`.
fn visible_entries(v: &str) -> Vec<&str> {
    v.split(',')
        .map(str::trim)
        .take_while(|e| !e.is_empty() && !e.starts_with('-'))
        .collect()
}

/// The listed devices `CUDA_VISIBLE_DEVICES` shows, in its order. As CUDA does, the list ends at the first
/// entry that names no device, names one ambiguously or names one twice.
pub fn visible<'a>(listed: &'a [Gpu], v: &str) -> Vec<&'a Gpu> {
    let mut out: Vec<&Gpu> = vec![];
    for entry in visible_entries(v) {
        let found = match entry.parse::<usize>() {
            Ok(i) => listed.iter().find(|g| g.index == i && g.uuid.starts_with("GPU-")),
            Err(_) => {
                let mut matches = listed.iter().filter(|g| g.uuid.starts_with(entry));
                match (matches.next(), matches.next()) {
                    (Some(g), None) => Some(g),
                    _ => None,
                }
            }
        };
        match found {
            Some(g) if !out.iter().any(|o| o.uuid == g.uuid) => out.push(g),
            _ => break,
        }
    }
    out
}

/// Run nvidia-smi: the GPUs with their memory, then the MIG instances from `-L`. None where it is missing
/// or fails.
fn query(program: &OsStr) -> Option<Vec<Gpu>> {
    let run = |args: &[&str]| {
        let out = Command::new(program).args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let table = run(&[
        "--query-gpu=index,uuid,name,memory.total,memory.free",
        "--format=csv,noheader,nounits",
    ])?;
    let mut gpus = parse_query(&table);
    if let Some(list) = run(&["-L"]) {
        gpus.extend(parse_mig(&list, &gpus));
    }
    Some(gpus)
}

/// Rows of `nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.free --format=csv,noheader,nounits`.
pub fn parse_query(text: &str) -> Vec<Gpu> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let [index, uuid, name, total, free] = f.as_slice() else {
                return None;
            };
            Some(Gpu {
                index: index.parse().ok()?,
                uuid: uuid.to_string(),
                name: name.to_string(),
                memory: total.parse().ok().zip(free.parse().ok()),
            })
        })
        .collect()
}

/// The MIG instances of `nvidia-smi -L`: "  MIG 1g.18gb  Device  0: (UUID: MIG-…)" under their GPU's line
/// "GPU 0: NVIDIA H200 (UUID: GPU-…)".
pub fn parse_mig(text: &str, gpus: &[Gpu]) -> Vec<Gpu> {
    let uuid_of = |line: &str| {
        line.rsplit_once("(UUID: ")
            .map(|(_, u)| u.trim_end().trim_end_matches(')').to_string())
    };
    let mut parent: Option<&Gpu> = None;
    let mut out = vec![];
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("GPU ") {
            let uuid = uuid_of(line);
            parent = gpus.iter().find(|g| Some(&g.uuid) == uuid.as_ref());
        } else if let (Some(rest), Some(p), Some(uuid)) = (trimmed.strip_prefix("MIG "), parent, uuid_of(line)) {
            let profile = rest.split_whitespace().next().unwrap_or("");
            out.push(Gpu {
                index: p.index,
                uuid,
                name: format!("{} MIG {profile}", p.name),
                memory: None,
            });
        }
    }
    out
}

/// Model names from the driver's /proc/driver/nvidia/gpus/*/information, in PCI order.
fn proc_names(root: &Path) -> Vec<String> {
    let mut dirs: Vec<std::path::PathBuf> = std::fs::read_dir(root)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.iter()
        .map(|d| {
            std::fs::read_to_string(d.join("information"))
                .ok()
                .and_then(|text| {
                    text.lines()
                        .find_map(|l| l.strip_prefix("Model:").map(|m| m.trim().to_string()))
                })
                .unwrap_or_else(|| "unknown".into())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUERY: &str = "0, GPU-aaaa1111-0000-0000-0000-000000000000, NVIDIA H100 80GB HBM3, 81559, 81000\n\
                         1, GPU-bbbb2222-0000-0000-0000-000000000000, NVIDIA H100 80GB HBM3, 81559, 40000\n\
                         2, GPU-cccc3333-0000-0000-0000-000000000000, NVIDIA H200, 143771, 143000\n\
                         3, GPU-dddd4444-0000-0000-0000-000000000000, NVIDIA H200, 143771, 1000\n";
    const LIST: &str = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa1111-0000-0000-0000-000000000000)\n\
                        GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bbbb2222-0000-0000-0000-000000000000)\n\
                        GPU 2: NVIDIA H200 (UUID: GPU-cccc3333-0000-0000-0000-000000000000)\n\
                        \x20 MIG 3g.71gb     Device  0: (UUID: MIG-eeee5555-0000-0000-0000-000000000000)\n\
                        \x20 MIG 3g.71gb     Device  1: (UUID: MIG-ffff6666-0000-0000-0000-000000000000)\n\
                        GPU 3: NVIDIA H200 (UUID: GPU-dddd4444-0000-0000-0000-000000000000)\n";

    fn listed() -> Vec<Gpu> {
        let mut g = parse_query(QUERY);
        let mig = parse_mig(LIST, &g);
        g.extend(mig);
        g
    }

    #[test]
    fn nvidia_smi_output_parses() {
        let g = listed();
        assert_eq!(g.len(), 6);
        assert_eq!(g[2].name, "NVIDIA H200");
        assert_eq!(g[1].memory, Some((81559, 40000)));
        assert_eq!(g[4].uuid, "MIG-eeee5555-0000-0000-0000-000000000000");
        assert_eq!(
            (g[4].index, g[4].name.as_str(), g[4].memory),
            (2, "NVIDIA H200 MIG 3g.71gb", None)
        );
        assert!(parse_query("No devices were found\n").is_empty());
    }

    /// The defect: under CUDA_VISIBLE_DEVICES=2, device 0 is nvidia-smi's GPU 2, not its GPU 0.
    #[test]
    fn visible_devices_are_mapped_by_uuid() {
        let cases: [(Option<&str>, &[&str]); 10] = [
            (None, &["aaaa", "bbbb", "cccc", "dddd"]),
            (Some("2"), &["cccc"]),
            (Some("3,1"), &["dddd", "bbbb"]),
            (Some("GPU-dddd4444-0000-0000-0000-000000000000"), &["dddd"]),
            // A unique prefix is enough, as for CUDA.
            (Some("GPU-cccc,0"), &["cccc", "aaaa"]),
            (Some("MIG-ffff6666-0000-0000-0000-000000000000"), &["ffff"]),
            // The list ends at the first entry that names no device, or names one twice.
            (Some("1,7,0"), &["bbbb"]),
            (Some("1,GPU-bbbb,0"), &["bbbb"]),
            (Some("GPU-,2"), &[]),
            (Some("-1"), &[]),
        ];
        for (v, want) in cases {
            let d = Devices::from_listing(Some(listed()), v);
            let got: Vec<String> = (0..d.count() as i32)
                .map(|i| d.get(i).unwrap().uuid[4..8].to_string())
                .collect();
            assert_eq!(got, want, "CUDA_VISIBLE_DEVICES={v:?}");
        }
        let d = Devices::from_listing(Some(listed()), Some("2"));
        assert_eq!(d.free_bytes(0), Some(143000 << 20));
        assert_eq!(d.name(0), "NVIDIA H200");
        assert_eq!(d.free_bytes(1), None);
        let d = Devices::from_listing(Some(listed()), Some("MIG-eeee"));
        assert_eq!(
            (d.count(), d.free_bytes(0)),
            (1, None),
            "a MIG instance's free memory is unknown"
        );
        assert_eq!(d.name(0), "NVIDIA H200 MIG 3g.71gb");
    }

    #[test]
    fn without_nvidia_smi_the_driver_and_the_variable_count() {
        let tmp = tempfile::tempdir().unwrap();
        let gpus = tmp.path().join("gpus");
        for (bus, model) in [
            ("0000:1b:00.0", "NVIDIA H100 80GB HBM3"),
            ("0000:9a:00.0", "NVIDIA H200"),
        ] {
            std::fs::create_dir_all(gpus.join(bus)).unwrap();
            std::fs::write(
                gpus.join(bus).join("information"),
                format!("Model: \t\t {model}\nIRQ: 1\n"),
            )
            .unwrap();
        }
        let missing = OsStr::new("/nonexistent/nvidia-smi");
        let empty = tmp.path().join("empty");
        let d = Devices::probe_with(missing, None, &gpus, &empty);
        assert!(d.any());
        assert_eq!(d.count(), 2);
        assert_eq!(d.name(1), "NVIDIA H200");
        assert_eq!(d.name(2), "unknown");
        assert_eq!(d.free_bytes(0), None);
        // Renumbered by CUDA_VISIBLE_DEVICES: the PCI-order names no longer apply.
        let d = Devices::probe_with(missing, Some("1".into()), &gpus, &empty);
        assert_eq!((d.count(), d.name(0).as_str()), (1, "unknown"));
        // Containers often have /dev/nvidiaN but no /proc/driver/nvidia.
        let dev = tmp.path().join("dev");
        std::fs::create_dir_all(&dev).unwrap();
        for f in ["nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm"] {
            std::fs::write(dev.join(f), b"").unwrap();
        }
        let d = Devices::probe_with(missing, None, &empty, &dev);
        assert_eq!((d.any(), d.count()), (true, 3));
        let d = Devices::probe_with(missing, Some("0,2,,1".into()), &empty, &dev);
        assert_eq!(d.count(), 2);
        let none = Devices::probe_with(missing, None, &empty, &empty);
        assert_eq!((none.any(), none.count()), (false, 0));
    }

    /// A fake nvidia-smi: the same answers through a real child process.
    #[test]
    fn a_fake_nvidia_smi_is_asked() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let fake = tmp.path().join("nvidia-smi");
        std::fs::write(
            &fake,
            format!("#!/bin/sh\nif [ \"$1\" = -L ]; then printf '%s' '{LIST}'; else printf '%s' '{QUERY}'; fi\n"),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let empty = tmp.path().join("empty");
        let d = Devices::probe_with(fake.as_os_str(), Some("GPU-dddd,0".into()), &empty, &empty);
        assert_eq!(d.count(), 2);
        assert_eq!(d.free_bytes(0), Some(1000 << 20));
        assert_eq!(d.free_bytes(1), Some(81000 << 20));
        assert!(
            d.describe()[0].starts_with("cuda:0 = NVIDIA H200 (GPU-dddd4444"),
            "{:?}",
            d.describe()
        );
    }
}
