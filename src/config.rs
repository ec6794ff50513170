//! The TOML configuration file: one optional section per output stage. Every key has a
//! default, and unknown keys are errors, so a typo is reported instead of silently ignored.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::display::DisplayConfig;
use crate::gpio::GpioConfig;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub display: Option<DisplayConfig>,
    pub gpio: Option<GpioConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
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
        ] {
            let err = Config::from_toml(text, "t").unwrap_err();
            assert!(matches!(err, ConfigError::Parse { .. }), "{text}: {err}");
        }
    }

    #[test]
    fn a_missing_file_is_a_read_error() {
        let err = Config::load(Path::new("/nonexistent/ferrite.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    }
}
