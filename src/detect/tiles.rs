//! Multi-scale detection for large frames: where the short model, seeing the whole frame shrunk to
//! 128x128, cannot find small faces, it also runs on overlapping square tiles, level by level, each
//! level's tiles half the side of the previous one's.
//!
//! The numbers come from `tests/detection` (see docs/detection.md) and from the short model's scale
//! range, measured by pasting the astronaut's face at sizes from 10 to 128 input pixels into a
//! 128x128 input: it scores 0.60 at 14 px, 0.82 at 16 px and at least 0.89 from 18 to 112 px. So a
//! tile of side `T` finds faces from about `SMALLEST_FACE * T` upwards, and a level need only find
//! the faces the next coarser level (tiles twice as large) cannot: up to about
//! `2 * SMALLEST_FACE * T`. Neighbouring tiles overlap by `OVERLAP * T`, more than that, so each
//! such face lies whole inside at least one tile.

use std::str::FromStr;

/// The smallest face the model finds reliably, as a fraction of the side of what it sees.
pub(super) const SMALLEST_FACE: f32 = 16.0 / 128.0;
/// Overlap of neighbouring tiles, as a fraction of their side: a level's faces (up to
/// `2 * SMALLEST_FACE` of a tile, with a margin) fit whole inside one tile.
const OVERLAP: f32 = 0.35;
/// `auto` looks for faces down to this fraction of the frame's shorter side (or `min_face_size`,
/// or [`AUTO_SMALLEST_FACE`], whichever is largest): a face of 4 % of a 1080-line frame is 43
/// pixels.
pub const AUTO_FACE_FRACTION: f32 = 0.04;
/// `auto` does not hunt for faces smaller than this many pixels: the expression model sees 48x48,
/// and a smaller face is blown up into a blur. It matters for small images only: a 512x512 photo
/// gets one level (10 detector runs) instead of two (46) for faces of 20 to 32 pixels.
pub const AUTO_SMALLEST_FACE: f32 = 32.0;
/// At most this many tile levels (`--tiles N`).
pub const MAX_LEVELS: u8 = 4;
/// No tile smaller than this many pixels: the model would see a blown-up blur.
const MIN_TILE: f32 = 64.0;
/// A tile's detection within this fraction of a tile side of an inner tile edge is a face the
/// edge cuts; a neighbouring tile holds it whole.
const EDGE_MARGIN: f32 = 0.02;

/// When to run the detector on tiles as well as on the whole frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tiles {
    /// For still images, the levels that find faces down to [`AUTO_FACE_FRACTION`] of the frame
    /// (or `min_face_size`, or [`AUTO_SMALLEST_FACE`]); for live video, off
    /// ([`Tiles::for_live_video`]).
    #[default]
    Auto,
    /// The whole frame only.
    Off,
    /// Exactly this many tile levels (1 to [`MAX_LEVELS`]), whatever the frame size.
    Levels(u8),
}

impl Tiles {
    /// What this setting means for a live camera or recording. `auto` is off there: a 640x480
    /// frame would take 37 graph runs instead of one (a 1280x720 one 109), and a camera's frame
    /// budget cannot pay that on every detection pass. The whole frame finds faces from about an
    /// eighth of the frame's longer side (80 px at 640x480); a wide view asks for levels.
    pub fn for_live_video(self) -> Tiles {
        match self {
            Tiles::Auto => Tiles::Off,
            other => other,
        }
    }
}

impl FromStr for Tiles {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Tiles::Auto),
            "off" | "0" => Ok(Tiles::Off),
            _ => match s.parse::<u8>() {
                Ok(n) if (1..=MAX_LEVELS).contains(&n) => Ok(Tiles::Levels(n)),
                _ => Err(format!(
                    "tiles must be \"auto\", \"off\" or a number of levels from 1 to {MAX_LEVELS}, \
                     not {s:?}"
                )),
            },
        }
    }
}

impl std::fmt::Display for Tiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tiles::Auto => f.write_str("auto"),
            Tiles::Off => f.write_str("off"),
            Tiles::Levels(n) => write!(f, "{n}"),
        }
    }
}

impl serde::Serialize for Tiles {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Tiles::Levels(n) => s.serialize_u8(*n),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Tiles {
    /// `"auto"`, `"off"` or a number of levels, as a string or an integer.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(t) => t,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A tile of the frame, in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    /// 1 for the largest tiles. 0 for a crop whose edges cut nothing (the second opinion's).
    pub level: u8,
}

impl Tile {
    /// Whether a box (frame pixels) reaches an edge of this tile that is not the frame's: the tile
    /// saw only part of that face.
    pub(super) fn cuts(
        &self,
        frame: (u32, u32),
        xmin: f32,
        ymin: f32,
        xmax: f32,
        ymax: f32,
    ) -> bool {
        let margin = EDGE_MARGIN * self.w.max(self.h) as f32;
        let (x0, y0) = (self.x as f32, self.y as f32);
        let (x1, y1) = ((self.x + self.w) as f32, (self.y + self.h) as f32);
        (self.x > 0 && xmin < x0 + margin)
            || (self.y > 0 && ymin < y0 + margin)
            || (self.x + self.w < frame.0 && xmax > x1 - margin)
            || (self.y + self.h < frame.1 && ymax > y1 - margin)
    }
}

/// How many tile levels `tiles` asks for on a `width x height` frame whose smallest wanted face
/// is `min_face` pixels.
pub fn levels(tiles: Tiles, width: u32, height: u32, min_face: f32) -> u8 {
    let longest = width.max(height) as f32;
    let usable = |level: u8| longest / f32::from(1u8 << level) >= MIN_TILE;
    match tiles {
        Tiles::Off => 0,
        Tiles::Levels(n) => (1..=n).take_while(|&l| usable(l)).count() as u8,
        Tiles::Auto => {
            let wanted = min_face
                .max(AUTO_FACE_FRACTION * width.min(height) as f32)
                .max(AUTO_SMALLEST_FACE);
            // Add levels while the previous one cannot see faces that small.
            (1..=MAX_LEVELS)
                .take_while(|&l| {
                    usable(l) && SMALLEST_FACE * longest / f32::from(1u8 << (l - 1)) > wanted
                })
                .count() as u8
        }
    }
}

/// The tiles of `levels` levels on a `width x height` frame, largest first. Level `l` tiles are
/// squares of side `longest / 2^l` (cut to the frame where it is narrower), spread evenly so that
/// neighbours overlap by at least [`OVERLAP`] of a side and the outer ones touch the frame edges.
pub fn plan(width: u32, height: u32, levels: u8) -> Vec<Tile> {
    let longest = width.max(height) as f32;
    let mut tiles = Vec::new();
    for level in 1..=levels {
        let side = (longest / f32::from(1u8 << level)).round() as u32;
        let starts = |extent: u32| -> Vec<u32> {
            if extent <= side {
                return vec![0];
            }
            let span = (extent - side) as f32;
            let n = (span / (side as f32 * (1.0 - OVERLAP))).ceil() as u32 + 1;
            (0..n)
                .map(|i| (span * i as f32 / (n - 1) as f32).round() as u32)
                .collect()
        };
        for &y in &starts(height) {
            for &x in &starts(width) {
                tiles.push(Tile {
                    x,
                    y,
                    w: side.min(width),
                    h: side.min(height),
                    level,
                });
            }
        }
    }
    tiles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_auto_off_and_levels() {
        assert_eq!("auto".parse(), Ok(Tiles::Auto));
        assert_eq!("off".parse(), Ok(Tiles::Off));
        assert_eq!("0".parse(), Ok(Tiles::Off));
        assert_eq!("2".parse(), Ok(Tiles::Levels(2)));
        assert!("5".parse::<Tiles>().is_err());
        assert!("-1".parse::<Tiles>().is_err());
        assert!("many".parse::<Tiles>().unwrap_err().contains("auto"));
        for tiles in [Tiles::Auto, Tiles::Off, Tiles::Levels(3)] {
            assert_eq!(tiles.to_string().parse(), Ok(tiles));
        }
    }

    #[test]
    fn auto_tiles_down_to_four_percent_or_the_smallest_face() {
        // 640x480: the 32 px floor decides; the whole frame finds 80 px, level 1 (320) 40,
        // level 2 (160) 20.
        assert_eq!(levels(Tiles::Auto, 640, 480, 20.0), 2);
        // 512x512: level 1 (256) finds 32 px, the floor.
        assert_eq!(levels(Tiles::Auto, 512, 512, 20.0), 1);
        assert_eq!(levels(Tiles::Auto, 640, 480, 80.0), 0);
        assert_eq!(levels(Tiles::Auto, 300, 200, 20.0), 1);
        // 1080 lines: 4 % is 43 px. The whole frame finds 240 px, level 1 (960) 120, level 2 (480)
        // 60, level 3 (240) 30.
        assert_eq!(levels(Tiles::Auto, 1920, 1080, 20.0), 3);
        assert_eq!(levels(Tiles::Auto, 1080, 1920, 20.0), 3);
        // A large min_face stops earlier: level 1 finds 120 px.
        assert_eq!(levels(Tiles::Auto, 1920, 1080, 150.0), 1);
        assert_eq!(levels(Tiles::Auto, 1920, 1080, 250.0), 0);
        // Explicit levels apply to any frame, but never below the smallest tile.
        assert_eq!(levels(Tiles::Levels(2), 640, 480, 20.0), 2);
        assert_eq!(levels(Tiles::Levels(4), 256, 256, 20.0), 2);
        assert_eq!(levels(Tiles::Off, 4000, 3000, 20.0), 0);
    }

    /// Every face a level is responsible for (up to twice the level's smallest face, plus the
    /// margin that makes it a tile's edge-cut otherwise) lies whole inside some tile of the level,
    /// wherever it is in the frame.
    #[test]
    fn each_level_holds_its_faces_whole() {
        for (width, height) in [
            (1920, 1080),
            (1280, 720),
            (1000, 1500),
            (3000, 2000),
            (961, 500),
        ] {
            let levels = 4;
            let tiles = plan(width, height, levels);
            for level in 1..=levels {
                let of_level: Vec<&Tile> = tiles.iter().filter(|t| t.level == level).collect();
                assert!(!of_level.is_empty());
                let side = of_level[0].w.max(of_level[0].h) as f32;
                let face = 2.0 * SMALLEST_FACE * side;
                let step = (face / 3.0).max(1.0);
                let mut y = 0.0;
                while y + face <= height as f32 {
                    let mut x = 0.0;
                    while x + face <= width as f32 {
                        let held = of_level.iter().any(|t| {
                            t.x as f32 <= x
                                && t.y as f32 <= y
                                && x + face <= (t.x + t.w) as f32
                                && y + face <= (t.y + t.h) as f32
                                && !t.cuts((width, height), x, y, x + face, y + face)
                        });
                        assert!(
                            held,
                            "{width}x{height} level {level}: face {face} at ({x}, {y})"
                        );
                        x += step;
                    }
                    y += step;
                }
            }
        }
    }

    #[test]
    fn tiles_stay_inside_the_frame_and_cover_it() {
        let tiles = plan(1920, 1080, 3);
        let count = |l| tiles.iter().filter(|t| t.level == l).count();
        assert_eq!(
            (count(1), count(2), count(3)),
            (6, 18, 84),
            "the costs docs/detection.md quotes"
        );
        for t in &tiles {
            assert!(t.x + t.w <= 1920 && t.y + t.h <= 1080, "{t:?}");
        }
        for level in 1..=3 {
            let right = tiles
                .iter()
                .filter(|t| t.level == level)
                .map(|t| t.x + t.w)
                .max();
            let bottom = tiles
                .iter()
                .filter(|t| t.level == level)
                .map(|t| t.y + t.h)
                .max();
            assert_eq!((right, bottom), (Some(1920), Some(1080)));
        }
    }

    #[test]
    fn only_inner_edges_cut() {
        let frame = (1000, 1000);
        let corner = Tile {
            x: 0,
            y: 0,
            w: 500,
            h: 500,
            level: 1,
        };
        // Touching the frame's own edges is fine; touching the tile's right edge is a cut.
        assert!(!corner.cuts(frame, 0.0, 0.0, 100.0, 100.0));
        assert!(corner.cuts(frame, 420.0, 100.0, 499.0, 180.0));
        let inner = Tile {
            x: 250,
            y: 250,
            w: 500,
            h: 500,
            level: 1,
        };
        assert!(inner.cuts(frame, 251.0, 400.0, 300.0, 450.0));
        assert!(!inner.cuts(frame, 400.0, 400.0, 450.0, 450.0));
    }

    #[test]
    fn live_video_keeps_explicit_levels_but_not_auto() {
        assert_eq!(Tiles::Auto.for_live_video(), Tiles::Off);
        assert_eq!(Tiles::Levels(2).for_live_video(), Tiles::Levels(2));
        assert_eq!(Tiles::Off.for_live_video(), Tiles::Off);
    }

    #[test]
    fn deserialises_from_strings_and_numbers() {
        #[derive(serde::Deserialize)]
        struct T {
            tiles: Tiles,
        }
        let parse = |s: &str| toml::from_str::<T>(s).map(|t| t.tiles);
        assert_eq!(parse("tiles = \"auto\"").unwrap(), Tiles::Auto);
        assert_eq!(parse("tiles = 2").unwrap(), Tiles::Levels(2));
        assert_eq!(parse("tiles = \"off\"").unwrap(), Tiles::Off);
        assert!(parse("tiles = 9")
            .unwrap_err()
            .to_string()
            .contains("1 to 4"));
    }
}
