//! `ferrite check`, `models` and `devices`: what this machine, the bundled models and the
//! cameras offer.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use ferrite::capture;
use ferrite::config::Config;
use ferrite::models;

/// `ferrite check`: each item of the layered configuration against this machine.
pub fn check(board: Option<&str>, config: Option<&Path>) -> Result<ExitCode> {
    let config = Config::layered(board, config)?;
    let items = ferrite::check::check(&config);
    let mut out = io::stdout().lock();
    for item in &items {
        let mark = if item.ok { "ok  " } else { "FAIL" };
        writeln!(out, "{mark}  {:<32} {}", item.what, item.detail)?;
    }
    Ok(if items.iter().all(|i| i.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `ferrite models`: the bundled models, a table or their manifests.
pub fn list_models(json: bool) -> Result<ExitCode> {
    let manifests = models::bundled_manifests()?;
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &manifests)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<18} {:<6} {:<7} {:<34} LABELS",
        "NAME", "FORMAT", "INPUT", "PARTS"
    )?;
    for m in &manifests {
        let default = if m.name == models::default_model() {
            " (default)"
        } else {
            ""
        };
        writeln!(
            out,
            "{:<18} {:<6} {:<7} {:<34} {}{default}",
            m.name,
            m.format,
            format!("{}x{}", m.input.width, m.input.height),
            m.parts.join(","),
            m.labels.join(",")
        )?;
    }
    writeln!(
        out,
        "\nDetails: ferrite models --json; model card: models/README.md"
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `ferrite devices`: the V4L2 cameras.
pub fn list_devices(json: bool) -> Result<ExitCode> {
    let devices = capture::list_devices();
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &devices)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", capture::devices::format_device_table(&devices))?;
    }
    Ok(ExitCode::SUCCESS)
}
