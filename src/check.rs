//! `ferrite check`: does this configuration fit the machine it runs on? Each item is checked
//! without starting the pipeline: the board's architecture, the camera, the display's bus, the
//! GPIO chip and lines, the MQTT broker's reachability.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use crate::capture::{self, PixelFormat};
use crate::classify::ClassifierOptions;
use crate::config::Config;
use crate::display::DisplayConfig;
use crate::ensemble::Ensemble;
use crate::gpio;
use crate::models;

#[derive(Debug, Clone, PartialEq)]
pub struct CheckItem {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

/// Loads the configured expression model in the configured precision.
pub fn check_model(config: &Config) -> CheckItem {
    let options = ClassifierOptions::from_config(&config.model);
    let loaded = models::resolve(&options.model)
        .map_err(|e| e.to_string())
        .and_then(|source| {
            Ensemble::load_with(&source, options.precision)
                .map(|_| "loads".to_string())
                .map_err(|e| e.to_string())
        });
    item(format!("model {}", options.model), loaded)
}

fn item(what: impl Into<String>, result: Result<String, String>) -> CheckItem {
    let (ok, detail) = match result {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    CheckItem {
        what: what.into(),
        ok,
        detail,
    }
}

/// Every check that applies to `config`, in pipeline order: the model first (it is loaded, so a
/// corrupt or tampered file fails here), then the board and its devices.
pub fn check(config: &Config) -> Vec<CheckItem> {
    let mut items = vec![check_model(config)];
    if let Some(board) = &config.board {
        items.push(item(
            format!("board {}", board.name),
            check_arch(&board.target),
        ));
    }
    items.push(item(
        format!("camera {}", config.camera.device),
        check_camera(&config.camera.device, &config.camera.formats),
    ));
    if let Some(display) = &config.display {
        items.extend(check_display(display));
    }
    if let Some(g) = &config.gpio {
        let mut lines: Vec<u32> = g.outputs.iter().map(|o| o.line).collect();
        lines.extend(g.face_present.iter().chain(&g.change).map(|l| l.line));
        items.push(item(
            format!("gpio {}", g.chip),
            check_chip(&g.chip, &lines),
        ));
    }
    if let Some(host) = &config.mqtt.host {
        let port = config.mqtt.broker_port();
        items.push(item(format!("mqtt {host}:{port}"), check_tcp(host, port)));
    }
    items
}

/// The target a board profile names against the architecture this binary was built for.
pub fn check_arch(target: &str) -> Result<String, String> {
    let arch = std::env::consts::ARCH;
    let matches = match arch {
        "arm" => target.starts_with("armv7") || target.starts_with("arm-"),
        other => target.starts_with(other),
    };
    if matches {
        Ok(format!("this binary is {arch}, as the board needs"))
    } else {
        Err(format!("the board needs {target}, this binary is {arch}"))
    }
}

fn check_camera(device: &str, allowed: &[PixelFormat]) -> Result<String, String> {
    let path = Path::new(device);
    if !device.starts_with("/dev/") {
        return match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => Ok("a directory of images".into()),
            Ok(_) => Ok("a file".into()),
            Err(e) => Err(e.to_string()),
        };
    }
    if !path.exists() {
        let found: Vec<String> = capture::list_devices()
            .into_iter()
            .filter(|d| d.capture)
            .map(|d| d.path)
            .collect();
        return Err(format!(
            "no such device (capture devices here: {})",
            if found.is_empty() {
                "none".to_string()
            } else {
                found.join(", ")
            }
        ));
    }
    let info = capture::list_devices()
        .into_iter()
        .find(|d| Path::new(&d.path) == path)
        .ok_or_else(|| "exists but is not a V4L2 device".to_string())?;
    if let Some(e) = info.error {
        return Err(e);
    }
    if !info.capture {
        return Err(format!(
            "{} ({}) does not capture video",
            info.card, info.driver
        ));
    }
    let usable: Vec<String> = info
        .formats
        .iter()
        .filter_map(|f| <[u8; 4]>::try_from(f.fourcc.as_bytes()).ok())
        .filter_map(PixelFormat::from_fourcc)
        .filter(|f| allowed.contains(f))
        .map(|f| format!("{f:?}"))
        .collect();
    if usable.is_empty() {
        return Err(format!(
            "{}: none of the allowed formats is offered",
            info.card
        ));
    }
    Ok(format!(
        "{} ({}), formats {}",
        info.card,
        info.driver,
        usable.join(", ")
    ))
}

fn check_node(what: &str, path: &Path) -> CheckItem {
    item(
        format!("{what} {}", path.display()),
        if path.exists() {
            Ok("present".into())
        } else {
            Err("missing (enable the bus, e.g. raspi-config or jetson-io, or fix the path)".into())
        },
    )
}

fn check_display(display: &DisplayConfig) -> Vec<CheckItem> {
    match display {
        DisplayConfig::Ssd1306(c) | DisplayConfig::Sh1106(c) => {
            vec![check_node("display i2c", &c.i2c)]
        }
        DisplayConfig::St7789(c) | DisplayConfig::Ili9341(c) => {
            let mut lines = vec![c.dc];
            lines.extend(c.reset);
            lines.extend(c.backlight);
            vec![
                check_node("display spi", &c.spi),
                item(
                    format!("display gpio {}", c.gpiochip),
                    check_chip(&c.gpiochip, &lines),
                ),
            ]
        }
        DisplayConfig::Framebuffer(c) => vec![check_node("display framebuffer", &c.device)],
        DisplayConfig::Png(c) => vec![item(
            format!("display png {}", c.path.display()),
            crate::display::check_png_folder(&c.path).map(|()| "folder exists".into()),
        )],
    }
}

#[cfg(not(feature = "gpio"))]
fn check_chip(_chip: &str, _lines: &[u32]) -> Result<String, String> {
    Err(gpio::NO_GPIO.into())
}

#[cfg(feature = "gpio")]
fn check_chip(chip: &str, lines: &[u32]) -> Result<String, String> {
    let chip = gpio::open_chip(chip).map_err(|e| e.to_string())?;
    let n = chip.num_lines();
    match lines.iter().find(|&&l| l >= n) {
        Some(l) => Err(format!("line {l} is beyond the chip's {n} lines")),
        None => Ok(format!("{} ({}), {n} lines", chip.name(), chip.label())),
    }
}

fn check_tcp(host: &str, port: u16) -> Result<String, String> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .collect();
    for addr in &addrs {
        if TcpStream::connect_timeout(addr, Duration::from_secs(2)).is_ok() {
            return Ok(format!("reachable at {addr}"));
        }
    }
    Err("no broker answers (ferrite keeps retrying at run time)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binarys_own_target_passes_and_others_fail() {
        let own = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
        assert!(check_arch(&own).is_ok());
        let other = if std::env::consts::ARCH == "x86_64" {
            "aarch64-unknown-linux-gnu"
        } else {
            "x86_64-unknown-linux-gnu"
        };
        assert!(check_arch(other).unwrap_err().contains(other));
    }

    #[test]
    fn missing_hardware_is_reported_item_by_item() {
        let config = Config::from_toml(
            "[camera]\ndevice = \"/dev/video99\"\n\
             [display]\ndriver = \"ssd1306\"\ni2c = \"/dev/i2c-99\"\n\
             [gpio]\nchip = \"no-such-chip\"\n",
            "t",
        )
        .unwrap();
        let items = check(&config);
        let whats: Vec<&str> = items.iter().map(|i| i.what.as_str()).collect();
        let model = format!("model {}", models::default_model());
        assert_eq!(
            whats,
            [
                model.as_str(),
                "camera /dev/video99",
                "display i2c /dev/i2c-99",
                "gpio no-such-chip"
            ]
        );
        assert!(items[0].ok, "the bundled model loads: {items:?}");
        assert!(items[1..].iter().all(|i| !i.ok), "{items:?}");
        assert!(items[1].detail.contains("no such device"), "{items:?}");
    }

    #[test]
    fn files_and_png_targets_pass_where_they_exist() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[camera]\ndevice = {:?}\n[display]\ndriver = \"png\"\npath = {:?}\n",
            dir.path().display().to_string(),
            dir.path().join("ui.png").display().to_string()
        );
        let items = check(&Config::from_toml(&text, "t").unwrap());
        assert!(items.iter().all(|i| i.ok), "{items:?}");
    }

    #[test]
    fn a_model_that_does_not_resolve_fails() {
        let config = Config::from_toml("[model]\nname = \"no-such-model\"\n", "t").unwrap();
        let item = check_model(&config);
        assert!(!item.ok);
        assert_eq!(item.what, "model no-such-model");
        assert!(item.detail.contains("no bundled model"), "{}", item.detail);
    }

    #[test]
    fn an_unreachable_broker_fails() {
        // Port 9 (discard) on loopback: nothing listens there in a test environment.
        assert!(check_tcp("127.0.0.1", 9).is_err());
    }
}
