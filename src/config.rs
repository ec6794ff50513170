//! The TOML configuration: one section per pipeline stage, optionally layered over a board
//! profile (boards/*.toml, embedded in the binary). Every key has a default, and unknown keys are
//! errors, so a typo is reported instead of silently ignored.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::capture::CaptureOptions;
use crate::display::DisplayConfig;
use crate::gpio::GpioConfig;
use crate::pipeline::PipelineConfig;
use crate::sink::json::JsonConfig;
use crate::sink::mqtt::MqttConfig;
use crate::track::TrackerConfig;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Facts about the board, set by a board profile (`--board`).
    pub board: Option<BoardInfo>,
    pub camera: CaptureOptions,
    pub model: ModelConfig,
    pub pipeline: PipelineConfig,
    pub tracker: TrackerConfig,
    pub json: JsonConfig,
    pub mqtt: MqttConfig,
    pub display: Option<DisplayConfig>,
    pub gpio: Option<GpioConfig>,
}

/// What a board profile says about its hardware. The bus and chip entries become the defaults of
/// the `[display]` and `[gpio]` sections, so a user config names only what is wired.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardInfo {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The Rust target triple of the binary this board runs.
    pub target: String,
    /// Label of the gpiochip that carries the header's lines.
    pub gpiochip: Option<String>,
    /// The I2C bus on the header's SDA/SCL pins.
    pub i2c: Option<PathBuf>,
    /// The SPI device on the header's SPI0 pins (CE0).
    pub spi: Option<PathBuf>,
    pub framebuffer: Option<PathBuf>,
}

/// Which expression model and detector to run, and on how many threads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// A bundled model name (`ferrite models` lists them) or a model directory. Default: the
    /// bundled default for this CPU.
    pub name: Option<String>,
    /// `short` (faces within ~2 m, 128x128 input) or `long` (full-range, 256x256). Default short.
    pub detector: Option<String>,
    /// `stored` (the model file's own arithmetic) or `f16` (a float model halved at load time).
    /// Default stored.
    pub precision: Option<crate::ensemble::Precision>,
    /// true: run `name` exactly as named. Default false: a bundled int8 model is timed against its
    /// fp32 sibling at start-up and the sibling runs where it is more than 1.2x faster.
    pub keep: Option<bool>,
}

/// The board profiles in boards/, embedded so `--board` works with the binary alone.
pub const BOARDS: &[(&str, &str)] = &[
    ("rpi3", include_str!("../boards/rpi3.toml")),
    ("rpi4", include_str!("../boards/rpi4.toml")),
    ("rpi5", include_str!("../boards/rpi5.toml")),
    ("rpi-zero2w", include_str!("../boards/rpi-zero2w.toml")),
    ("jetson-nano", include_str!("../boards/jetson-nano.toml")),
    (
        "jetson-orin-nano",
        include_str!("../boards/jetson-orin-nano.toml"),
    ),
    ("x86-desktop", include_str!("../boards/x86-desktop.toml")),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unknown board {0:?}; known boards: {1}")]
    UnknownBoard(String, String),
    #[error("{origin}:{line}:{column}: {message}")]
    Parse {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, &path.display().to_string())
    }

    /// The effective configuration: the board profile (if any), with the user's file (if any)
    /// merged over it key by key, then the board's buses and chip filled into `[display]` and
    /// `[gpio]` where the user left them out.
    pub fn layered(board: Option<&str>, user: Option<&Path>) -> Result<Config, ConfigError> {
        let mut table = toml::Table::new();
        if let Some(name) = board {
            let text = board_profile(name)?;
            Config::from_toml(text, &format!("boards/{name}.toml"))?;
            table = parse_table(text, name)?;
        }
        if let Some(path) = user {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let origin = path.display().to_string();
            // Validate the user's file alone first so its errors point into it.
            Config::from_toml(&text, &origin)?;
            merge(&mut table, parse_table(&text, &origin)?);
        }
        fill_board_defaults(&mut table);
        let text = toml::to_string(&table).map_err(|e| ConfigError::Parse {
            origin: "merged configuration".into(),
            line: 0,
            column: 0,
            message: e.to_string(),
        })?;
        Config::from_toml(&text, "merged configuration")
    }

    /// Parses TOML text; `origin` names it in errors (a path, or "<string>").
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let offset = e
                .span()
                .map(|s| s.start)
                .filter(|start| *start > 0)
                .or_else(|| key_offset(text, e.message()))
                .unwrap_or(0)
                .min(text.len());
            let before = &text[..offset];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            ConfigError::Parse {
                origin: origin.to_string(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })
    }
}

/// The embedded profile text of a board.
pub fn board_profile(name: &str) -> Result<&'static str, ConfigError> {
    BOARDS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
        .ok_or_else(|| {
            let known: Vec<&str> = BOARDS.iter().map(|(n, _)| *n).collect();
            ConfigError::UnknownBoard(name.to_string(), known.join(", "))
        })
}

fn parse_table(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        origin: origin.to_string(),
        line: 0,
        column: 0,
        message: e.message().to_string(),
    })
}

/// Tables merge key by key; any other value (arrays included) is replaced whole.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn fill_board_defaults(table: &mut toml::Table) {
    let Some(toml::Value::Table(board)) = table.get("board").cloned() else {
        return;
    };
    let fact = |key: &str| board.get(key).cloned();
    if let Some(toml::Value::Table(display)) = table.get_mut("display") {
        let driver = display.get("driver").and_then(|d| d.as_str()).unwrap_or("");
        let wanted: &[(&str, &str)] = match driver {
            "ssd1306" | "sh1106" => &[("i2c", "i2c")],
            "st7789" | "ili9341" => &[("spi", "spi"), ("gpiochip", "gpiochip")],
            "framebuffer" => &[("device", "framebuffer")],
            _ => &[],
        };
        for (key, board_key) in wanted {
            if let (false, Some(v)) = (display.contains_key(*key), fact(board_key)) {
                display.insert(key.to_string(), v);
            }
        }
    }
    if let Some(toml::Value::Table(gpio)) = table.get_mut("gpio") {
        if let (false, Some(v)) = (gpio.contains_key("chip"), fact("gpiochip")) {
            gpio.insert("chip".into(), v);
        }
    }
}

/// serde's internally tagged enums (the `[display]` section, tagged by `driver`) lose toml's
/// spans, so an unknown key there is reported at 1:1; find the key named in the message instead.
fn key_offset(text: &str, message: &str) -> Option<usize> {
    let key = message.split('`').nth(1)?;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with(key) && trimmed[key.len()..].trim_start().starts_with('=') {
            return Some(offset + line.len() - trimmed.len());
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::display::{DisplayConfig, TftConfig};

    #[test]
    fn the_example_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ferrite.toml");
        let config = Config::load(&path).expect("example config");
        let Some(DisplayConfig::St7789(TftConfig { dc, reset, .. })) = config.display else {
            panic!("display: {:?}", config.display);
        };
        assert_eq!((dc, reset), (25, Some(27)));
        assert_eq!(
            config.model.precision,
            Some(crate::ensemble::Precision::Stored)
        );
        assert_eq!(config.model.keep, Some(false));
        let gpio = config.gpio.expect("gpio");
        assert_eq!(gpio.chip, "pinctrl-rp1");
        assert_eq!(gpio.outputs.len(), 3);
        // The commented-out alternatives parse too.
        for driver in ["ssd1306", "framebuffer", "png"] {
            let text = std::fs::read_to_string(&path).unwrap();
            let block = text
                .split("# [display]\n")
                .find(|b| b.contains(&format!("driver = \"{driver}\"")))
                .expect(driver);
            let toml: String = block
                .lines()
                .take_while(|l| l.starts_with('#') && !l.trim_start_matches('#').trim().is_empty())
                .map(|l| format!("{}\n", l.trim_start_matches('#').trim_start()))
                .collect();
            let config = Config::from_toml(&format!("[display]\n{toml}"), driver)
                .unwrap_or_else(|e| panic!("{driver}: {e}"));
            assert!(config.display.is_some(), "{driver}");
        }
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(Config::from_toml("", "x").unwrap(), Config::default());
    }

    #[test]
    fn errors_give_line_and_column() {
        let err =
            Config::from_toml("[gpio]\nchip = \"a\"\nactive_low = maybe\n", "f.toml").unwrap_err();
        let ConfigError::Parse { line, column, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!((*line, *column), (3, 14), "{err}");
        assert!(err.to_string().starts_with("f.toml:3:14:"), "{err}");
    }

    #[test]
    fn unknown_keys_in_the_display_section_are_located() {
        let err = Config::from_toml("[display]\ndriver = \"png\"\n  widht = 3\n", "f").unwrap_err();
        assert!(
            err.to_string().starts_with("f:3:3: unknown field `widht`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        for text in [
            "[displya]\ndriver = \"png\"\n",
            "[display]\ndriver = \"png\"\ncolour = 1\n",
            "[gpio]\nchips = \"x\"\n",
            "[display]\ndriver = \"vga\"\n",
            "[model]\nprecision = \"half\"\n",
        ] {
            let err = Config::from_toml(text, "t").unwrap_err();
            assert!(matches!(err, ConfigError::Parse { .. }), "{text}: {err}");
        }
    }

    #[test]
    fn every_board_profile_parses_and_names_itself() {
        for (name, text) in BOARDS {
            let config = Config::from_toml(text, name).unwrap_or_else(|e| panic!("{e}"));
            let board = config.board.expect("[board]");
            assert_eq!(board.name, *name);
            assert!(board.target.contains("-linux-"), "{name}: {}", board.target);
            assert!(config.model.name.is_some(), "{name}");
        }
        let files = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("boards"))
            .unwrap()
            .count();
        assert_eq!(files, BOARDS.len(), "a profile in boards/ is not embedded");
    }

    #[test]
    fn a_user_config_overrides_the_board_and_inherits_its_buses() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("ferrite.toml");
        std::fs::write(
            &user,
            "[camera]\nsize = \"320x240\"\n[display]\ndriver = \"ssd1306\"\n\
             [gpio]\n[[gpio.outputs]]\nline = 17\nlabels = [\"happy\"]\n",
        )
        .unwrap();
        let config = Config::layered(Some("jetson-orin-nano"), Some(&user)).unwrap();
        assert_eq!(config.camera.size.to_string(), "320x240");
        assert_eq!(config.camera.fps, Some(30.0), "kept from the board");
        assert_eq!(config.pipeline.detect_every, 2, "kept from the board");
        assert_eq!(
            config.model.precision,
            Some(crate::ensemble::Precision::F16),
            "kept from the board"
        );
        let Some(DisplayConfig::Ssd1306(oled)) = &config.display else {
            panic!("{:?}", config.display);
        };
        assert_eq!(oled.i2c, PathBuf::from("/dev/i2c-7"), "the board's bus");
        assert_eq!(config.gpio.expect("gpio").chip, "tegra234-gpio");

        let plain = Config::layered(None, Some(&user)).unwrap();
        assert_eq!(
            plain.gpio.expect("gpio").chip,
            "gpiochip0",
            "no board: the default"
        );
        let Some(DisplayConfig::Ssd1306(oled)) = &plain.display else {
            panic!()
        };
        assert_eq!(oled.i2c, PathBuf::from("/dev/i2c-1"));
    }

    #[test]
    fn layered_errors_point_into_the_users_file_and_name_known_boards() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("bad.toml");
        std::fs::write(&user, "[camera]\nsize = \"big\"\n").unwrap();
        let err = Config::layered(Some("rpi5"), Some(&user)).unwrap_err();
        assert!(err.to_string().contains("bad.toml:2:"), "{err}");
        let err = Config::layered(Some("rpi6"), None).unwrap_err();
        assert!(err.to_string().contains("rpi5"), "{err}");
    }

    #[test]
    fn the_service_config_layers_over_every_board() {
        let service = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ferrite.toml");
        for (name, _) in BOARDS {
            let config = Config::layered(Some(name), Some(&service)).unwrap();
            assert_eq!(config.board.map(|b| b.name).as_deref(), Some(*name));
        }
    }

    #[test]
    fn a_missing_file_is_a_read_error() {
        let err = Config::load(Path::new("/nonexistent/ferrite.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    }
}
