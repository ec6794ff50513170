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
use crate::sink::ros2::Ros2Config;
use crate::sink::web::WebConfig;
use crate::track::TrackerConfig;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Facts about the board, set by a board profile (`--board`).
    pub board: Option<BoardInfo>,
    pub camera: CaptureOptions,
    pub model: ModelConfig,
    pub detect: DetectConfig,
    pub pipeline: PipelineConfig,
    pub tracker: TrackerConfig,
    pub json: JsonConfig,
    pub mqtt: MqttConfig,
    pub ros2: Ros2Config,
    pub web: WebConfig,
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
    pub detector: Option<crate::detect::DetectorModel>,
    /// `stored` (the model file's own arithmetic) or `f16` (a float model halved at load time).
    /// Default stored.
    pub precision: Option<crate::ensemble::Precision>,
    /// true: run `name` exactly as named. Default false: a bundled int8 model is timed against its
    /// fp32 sibling at start-up and the sibling runs where it is more than 1.2x faster.
    pub keep: Option<bool>,
}

/// How the detector searches a frame (`[detect]`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// A number of tile levels from 1 to 4 (search a wide view tile by tile for small faces),
    /// `"off"`, or `"auto"`: off for `run` (live video), enough levels for 4 % faces in stills.
    /// Default auto.
    pub tiles: Option<crate::detect::Tiles>,
    /// A face the detector is unsure of (score below 0.85) is reported only if it finds it again in
    /// two crops around it (two more detector runs per such face). Default: true for still images;
    /// for `run`, true only when tiles are on.
    pub verify: Option<bool>,
}

/// What the command line sets over the board profile and the config file: the third layer.
/// `None` (or `false`) leaves the layered value as it is; a set flag always wins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub input: Option<String>,
    pub size: Option<crate::capture::Size>,
    pub fps: Option<f64>,
    pub looping: bool,
    pub model: Option<String>,
    pub precision: Option<crate::ensemble::Precision>,
    pub keep_model: Option<bool>,
    pub detector: Option<crate::detect::DetectorModel>,
    pub tiles: Option<crate::detect::Tiles>,
    pub verify: Option<bool>,
    pub detect_every: Option<u32>,
    pub max_frames: Option<u64>,
    pub min_hits: Option<u32>,
    pub max_misses: Option<u32>,
    pub smoothing: Option<f32>,
    pub switch_margin: Option<f32>,
    pub switch_frames: Option<u32>,
    pub json_path: Option<PathBuf>,
    pub no_json: bool,
    pub json_state: bool,
    pub mqtt: MqttOverrides,
    pub ros2: Ros2Overrides,
    pub web: WebOverrides,
    pub display: Option<DisplayConfig>,
}

/// The web view's flags of [`Overrides`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebOverrides {
    /// `--web` (`Some(None)`: at the configured address) or `--web ADDR`.
    pub listen: Option<Option<String>>,
    pub token: Option<String>,
    pub blur_faces: bool,
}

/// The ROS 2 flags of [`Overrides`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ros2Overrides {
    pub enabled: bool,
    pub domain_id: Option<u16>,
    pub frame_id: Option<String>,
    pub localhost_only: bool,
}

/// The MQTT flags of [`Overrides`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MqttOverrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub client_id: Option<String>,
    pub base_topic: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub homeassistant: bool,
}

fn set<T>(value: &mut T, flag: &Option<T>)
where
    T: Clone,
{
    if let Some(v) = flag {
        *value = v.clone();
    }
}

fn set_some<T: Clone>(value: &mut Option<T>, flag: &Option<T>) {
    if flag.is_some() {
        value.clone_from(flag);
    }
}

impl Overrides {
    /// Writes the set flags into `config`.
    pub fn apply(&self, config: &mut Config) {
        let camera = &mut config.camera;
        set(&mut camera.device, &self.input);
        set(&mut camera.size, &self.size);
        set_some(&mut camera.fps, &self.fps);
        camera.looping |= self.looping;

        let model = &mut config.model;
        set_some(&mut model.name, &self.model);
        set_some(&mut model.precision, &self.precision);
        set_some(&mut model.keep, &self.keep_model);
        set_some(&mut model.detector, &self.detector);
        set_some(&mut config.detect.tiles, &self.tiles);
        set_some(&mut config.detect.verify, &self.verify);

        set(&mut config.pipeline.detect_every, &self.detect_every);
        set_some(&mut config.pipeline.max_frames, &self.max_frames);

        let tracker = &mut config.tracker;
        set(&mut tracker.min_hits, &self.min_hits);
        set(&mut tracker.max_misses, &self.max_misses);
        set(&mut tracker.smoothing, &self.smoothing);
        set(&mut tracker.switch_margin, &self.switch_margin);
        set(&mut tracker.switch_frames, &self.switch_frames);

        let json = &mut config.json;
        json.enabled &= !self.no_json;
        set_some(&mut json.path, &self.json_path);
        json.state |= self.json_state;

        let (mqtt, flags) = (&mut config.mqtt, &self.mqtt);
        set_some(&mut mqtt.host, &flags.host);
        set_some(&mut mqtt.port, &flags.port);
        set_some(&mut mqtt.client_id, &flags.client_id);
        set_some(&mut mqtt.base_topic, &flags.base_topic);
        set_some(&mut mqtt.username, &flags.username);
        set_some(&mut mqtt.password_file, &flags.password_file);
        set_some(&mut mqtt.ca_file, &flags.ca_file);
        set_some(&mut mqtt.client_cert, &flags.client_cert);
        set_some(&mut mqtt.client_key, &flags.client_key);
        mqtt.tls |= flags.tls;
        mqtt.homeassistant |= flags.homeassistant;

        let (ros2, flags) = (&mut config.ros2, &self.ros2);
        ros2.enabled |= flags.enabled;
        set_some(&mut ros2.domain_id, &flags.domain_id);
        set(&mut ros2.frame_id, &flags.frame_id);
        ros2.localhost_only |= flags.localhost_only;

        let (web, flags) = (&mut config.web, &self.web);
        if let Some(listen) = &flags.listen {
            web.enabled = true;
            set(&mut web.listen, listen);
        }
        if flags.token.is_some() {
            web.token.clone_from(&flags.token);
        }
        web.blur_faces |= flags.blur_faces;

        set_some(&mut config.display, &self.display);
    }
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
    #[error(transparent)]
    Tracker(crate::track::TrackerConfigError),
    #[error("{0}")]
    Ros2(String),
    #[error("[web] {0}")]
    Web(String),
    #[error("{origin}: {source}")]
    OutOfRange {
        origin: String,
        source: crate::limits::OutOfRange,
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

    /// All three layers: the board profile, the user's file over it, the command line's flags
    /// over both; then the tracker settings are checked as a whole.
    pub fn resolve(
        board: Option<&str>,
        user: Option<&Path>,
        flags: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::layered(board, user)?;
        flags.apply(&mut config);
        config.validate("the command line")?;
        Ok(config)
    }

    /// Every size, rate and count within [`crate::limits`], then the tracker settings as a
    /// whole. `origin` names the layer that was just applied, for the error.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        self.check_bounds()
            .map_err(|source| ConfigError::OutOfRange {
                origin: origin.to_string(),
                source,
            })?;
        if self.ros2.enabled {
            self.ros2.validate().map_err(ConfigError::Ros2)?;
        }
        if self.web.enabled {
            self.web.validate().map_err(ConfigError::Web)?;
        }
        self.tracker.validate().map_err(ConfigError::Tracker)
    }

    fn check_bounds(&self) -> Result<(), crate::limits::OutOfRange> {
        use crate::display::DisplayConfig;
        use crate::limits::*;
        let camera = &self.camera;
        CAMERA_SIDE.check(camera.size.width)?;
        CAMERA_SIDE.check(camera.size.height)?;
        if let Some(fps) = camera.fps {
            FPS.check(fps)?;
        }
        CAMERA_TIMEOUT_MS.check(camera.timeout_ms)?;
        RECONNECT_MS.check(camera.reconnect_initial_ms)?;
        RECONNECT_MS.check(camera.reconnect_max_ms)?;
        CAMERA_BUFFERS.check(camera.buffers)?;
        DETECT_EVERY.check(self.pipeline.detect_every)?;
        STATS_INTERVAL_S.check(self.pipeline.stats_interval_s)?;
        MIN_HITS.check(self.tracker.min_hits)?;
        MAX_MISSES.check(self.tracker.max_misses)?;
        SWITCH_FRAMES.check(self.tracker.switch_frames)?;
        JSON_STATE_EVERY.check(self.json.state_every)?;
        MQTT_KEEP_ALIVE_S.check(self.mqtt.keep_alive_s)?;
        MQTT_STATE_INTERVAL_MS.check(self.mqtt.state_interval_ms)?;
        match &self.display {
            Some(DisplayConfig::St7789(tft) | DisplayConfig::Ili9341(tft)) => {
                SPI_HZ.check(tft.spi_hz)?;
                for side in [tft.width, tft.height].into_iter().flatten() {
                    DISPLAY_SIDE.check(side)?;
                }
            }
            Some(DisplayConfig::Png(png)) => {
                DISPLAY_SIDE.check(png.width)?;
                DISPLAY_SIDE.check(png.height)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Parses TOML text and checks its values ([`Config::validate`]); `origin` names it in
    /// errors (a path, or "<string>").
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config = Config::parse_toml(text, origin)?;
        config.validate(origin)?;
        Ok(config)
    }

    fn parse_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
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
    use crate::detect::DetectorModel;
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
        // The example's [ros2] spells out the defaults.
        assert_eq!(config.ros2, Ros2Config::default());
        // So does its [web].
        assert_eq!(config.web, WebConfig::default());
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
    fn sizes_rates_and_counts_in_a_file_get_the_command_line_bounds() {
        let cases = [
            (
                "[display]\ndriver = \"png\"\nwidth = 60000\nheight = 60000\n",
                "display.width/height = 60000",
            ),
            (
                "[pipeline]\ndetect_every = 0\n",
                "pipeline.detect_every = 0",
            ),
            ("[camera]\nfps = 0\n", "camera.fps = 0"),
            ("[camera]\nfps = -1\n", "camera.fps = -1"),
            ("[camera]\nsize = \"100000x10\"\n", "camera.size = 100000"),
            ("[camera]\nbuffers = 100000\n", "camera.buffers = 100000"),
            ("[tracker]\nmax_misses = 4000000000\n", "tracker.max_misses"),
        ];
        for (text, want) in cases {
            let err = Config::from_toml(text, "my.toml").unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(err.starts_with("my.toml"), "names the file: {err}");
        }
        let sane = "[display]\ndriver = \"png\"\nwidth = 4096\nheight = 1\n[camera]\nfps = 0.5\n";
        Config::from_toml(sane, "t").expect("the ends of the ranges are allowed");
    }

    #[test]
    fn the_web_flags_turn_the_view_on_at_the_file_s_address_or_their_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ferrite.toml");
        std::fs::write(
            &file,
            "[web]\nlisten = \"0.0.0.0:9000\"\nstream_fps = 2.0\n",
        )
        .expect("write");
        let off = Config::resolve(None, Some(&file), &Overrides::default()).unwrap();
        assert!(!off.web.enabled);
        let flags = |listen: Option<&str>| Overrides {
            web: WebOverrides {
                listen: Some(listen.map(str::to_string)),
                token: Some("t0ken".into()),
                blur_faces: true,
            },
            ..Overrides::default()
        };
        let bare = Config::resolve(None, Some(&file), &flags(None)).unwrap();
        assert!(bare.web.enabled && bare.web.blur_faces);
        assert_eq!(bare.web.listen, "0.0.0.0:9000");
        assert_eq!(bare.web.stream_fps, 2.0);
        assert_eq!(bare.web.token.as_deref(), Some("t0ken"));
        let addressed = Config::resolve(None, Some(&file), &flags(Some("127.0.0.1:7000"))).unwrap();
        assert_eq!(addressed.web.listen, "127.0.0.1:7000");
        let Err(e) = Config::resolve(None, Some(&file), &flags(Some("nowhere"))) else {
            panic!("a bad address was accepted");
        };
        assert!(e.to_string().starts_with("[web] listen must be"), "{e}");
    }

    #[test]
    fn flags_win_over_the_file_and_the_board() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ferrite.toml");
        std::fs::write(
            &file,
            "[camera]\ndevice = \"/dev/video2\"\nfps = 10\n[model]\ndetector = \"long\"\n\
             [tracker]\nmin_hits = 5\n[mqtt]\nhost = \"broker\"\nport = 1884\n",
        )
        .expect("write");
        // The file alone over the board.
        let layered = Config::resolve(Some("rpi5"), Some(&file), &Overrides::default()).unwrap();
        assert_eq!(layered.camera.device, "/dev/video2");
        assert_eq!(layered.camera.fps, Some(10.0));
        assert_eq!(layered.model.detector, Some(DetectorModel::Long));
        assert_eq!(layered.tracker.min_hits, 5);
        assert_eq!(layered.mqtt.port, Some(1884));
        assert!(layered.json.enabled);
        // Flags over both; what they leave unset keeps the file's value.
        let flags = Overrides {
            input: Some("clip.y4m".into()),
            detector: Some(DetectorModel::Short),
            min_hits: Some(2),
            no_json: true,
            mqtt: MqttOverrides {
                port: Some(8883),
                tls: true,
                ..MqttOverrides::default()
            },
            ..Overrides::default()
        };
        let config = Config::resolve(Some("rpi5"), Some(&file), &flags).unwrap();
        assert_eq!(config.camera.device, "clip.y4m");
        assert_eq!(config.camera.fps, Some(10.0));
        assert_eq!(config.model.detector, Some(DetectorModel::Short));
        assert_eq!(config.tracker.min_hits, 2);
        assert_eq!(config.mqtt.host.as_deref(), Some("broker"));
        assert_eq!(config.mqtt.port, Some(8883));
        assert!(config.mqtt.tls);
        assert!(!config.json.enabled);
        // The board's own facts survive every layer.
        assert_eq!(config.board.map(|b| b.name), Some("rpi5".to_string()));
    }

    #[test]
    fn an_invalid_tracker_flag_is_an_error() {
        let flags = Overrides {
            smoothing: Some(0.0),
            ..Overrides::default()
        };
        assert!(matches!(
            Config::resolve(None, None, &flags),
            Err(ConfigError::Tracker(_))
        ));
    }

    #[test]
    fn the_detect_section_takes_tiles_and_verify() {
        use crate::detect::Tiles;
        let config = Config::from_toml("[detect]\ntiles = 2\nverify = false\n", "x").unwrap();
        assert_eq!(config.detect.tiles, Some(Tiles::Levels(2)));
        assert_eq!(config.detect.verify, Some(false));
        let auto = Config::from_toml("[detect]\ntiles = \"auto\"\n", "x").unwrap();
        assert_eq!(auto.detect.tiles, Some(Tiles::Auto));
        let err = Config::from_toml("[detect]\n\ntiles = 7\n", "x").unwrap_err();
        assert!(err.to_string().starts_with("x:3:"), "{err}");
        assert!(Config::from_toml("[detect]\ntile = 1\n", "x").is_err());
    }

    #[test]
    fn the_detector_key_takes_only_known_models() {
        let config = Config::from_toml("[model]\ndetector = \"long\"\n", "x").unwrap();
        assert_eq!(config.model.detector, Some(DetectorModel::Long));
        let err = Config::from_toml("[model]\ndetector = \"medium\"\n", "x").unwrap_err();
        assert!(err.to_string().contains("medium"), "{err}");
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
            // x86-desktop alone leaves the model to the CPU (`models::default_model`): x86_64
            // CPUs differ in VNNI, which decides whether int8 or fp32 is faster.
            assert_eq!(
                config.model.name.is_some(),
                *name != "x86-desktop",
                "{name}"
            );
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
            config.model.name.as_deref(),
            Some("fer2013-48-int8"),
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
