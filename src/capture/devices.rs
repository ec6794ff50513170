//! What `ferrite devices` and `ferrite check` report about the V4L2 nodes, in a form that needs
//! no V4L2 binding, so a build without the `v4l2` feature still lists the nodes and says why it
//! cannot open them.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

/// A V4L2 node as `ferrite devices` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    pub path: String,
    pub driver: String,
    pub card: String,
    pub bus: String,
    /// Whether this node captures video (UVC cameras add metadata nodes that do not).
    pub capture: bool,
    pub formats: Vec<FormatInfo>,
    /// Why the node could not be queried (busy, permissions), when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FormatInfo {
    pub fourcc: String,
    pub description: String,
    /// Whether ferrite decodes it.
    pub supported: bool,
    pub sizes: Vec<SizeInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SizeInfo {
    /// "640x480", or "16x16-1920x1080 step 8x8" for a range.
    pub size: String,
    /// Frame rates offered at that size (at the largest size of a range); for a range of rates,
    /// its fastest and slowest.
    pub fps: Vec<f64>,
}

/// `/dev/video*` nodes in numeric order.
pub(crate) fn video_nodes() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/dev") else {
        return Vec::new();
    };
    let mut nodes: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let n = name.to_str()?.strip_prefix("video")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, p)| p).collect()
}

/// The human-readable listing `ferrite devices` prints.
pub fn format_device_table(devices: &[DeviceInfo]) -> String {
    let mut out = String::new();
    for d in devices {
        let _ = write!(out, "{}", d.path);
        if !d.card.is_empty() {
            let _ = write!(out, "  {} ({}, {})", d.card, d.driver, d.bus);
        }
        if let Some(e) = &d.error {
            let _ = writeln!(out, "  error: {e}");
            continue;
        }
        if !d.capture {
            let _ = writeln!(out, "  not a capture node");
            continue;
        }
        let _ = writeln!(out);
        for f in &d.formats {
            let _ = writeln!(
                out,
                "  {:<4}  {}{}",
                f.fourcc,
                f.description,
                if f.supported { "" } else { "  (not supported)" }
            );
            for s in &f.sizes {
                let fps: Vec<String> = s.fps.iter().map(|f| format!("{f}")).collect();
                let _ = writeln!(
                    out,
                    "        {:<12} {}",
                    s.size,
                    if fps.is_empty() {
                        String::new()
                    } else {
                        format!("{} fps", fps.join(", "))
                    }
                );
            }
        }
    }
    if !devices.iter().any(|d| d.capture) {
        out.push_str("no V4L2 capture devices found\n");
    }
    out
}

/// Without the `v4l2` feature: every `/dev/video*` node, each with the reason it is not queried.
#[cfg(not(feature = "v4l2"))]
pub fn list_devices() -> Vec<DeviceInfo> {
    video_nodes()
        .iter()
        .map(|p| DeviceInfo {
            path: p.display().to_string(),
            driver: String::new(),
            card: String::new(),
            bus: String::new(),
            capture: false,
            formats: Vec::new(),
            error: Some(super::NO_V4L2.into()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_says_when_there_is_no_camera() {
        assert_eq!(format_device_table(&[]), "no V4L2 capture devices found\n");
        let table = format_device_table(&[DeviceInfo {
            path: "/dev/video0".into(),
            driver: "uvcvideo".into(),
            card: "Webcam".into(),
            bus: "usb-1".into(),
            capture: true,
            formats: vec![FormatInfo {
                fourcc: "MJPG".into(),
                description: "Motion-JPEG".into(),
                supported: true,
                sizes: vec![SizeInfo {
                    size: "640x480".into(),
                    fps: vec![30.0, 15.0],
                }],
            }],
            error: None,
        }]);
        assert!(table.contains("/dev/video0  Webcam (uvcvideo, usb-1)"));
        assert!(table.contains("640x480      30, 15 fps"));
        assert!(!table.contains("no V4L2"));
    }
}
