//! The picture: the primary face's expression, a confidence bar per class, the part that drove
//! the decision, the face count and FPS. Generic over any `DrawTarget` so every driver, the PNG
//! previews and the golden tests draw exactly the same pixels.

use embedded_graphics::mono_font::ascii::{FONT_10X20, FONT_4X6, FONT_5X8, FONT_6X10};
use embedded_graphics::mono_font::{MonoFont, MonoTextStyle};
use embedded_graphics::pixelcolor::{BinaryColor, Rgb565, Rgb888};
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{
    Arc, Circle, Line, Polyline, PrimitiveStyle, Rectangle, RoundedRectangle,
};
use embedded_graphics::text::{Alignment, Baseline, Text, TextStyleBuilder};
use profont::{PROFONT_10_POINT, PROFONT_18_POINT, PROFONT_24_POINT};

use super::OutputState;
use crate::classify::FaceResult;

/// A colour the UI can draw in; the palette is written once in RGB and mapped per display.
pub trait UiColor: PixelColor {
    fn from_rgb(c: Rgb888) -> Self;
}

impl UiColor for Rgb888 {
    fn from_rgb(c: Rgb888) -> Self {
        c
    }
}

impl UiColor for Rgb565 {
    fn from_rgb(c: Rgb888) -> Self {
        c.into()
    }
}

impl UiColor for BinaryColor {
    /// On for every palette colour meant to be seen (faces, bars, text), off for the background,
    /// tracks and the features drawn on a face.
    fn from_rgb(c: Rgb888) -> Self {
        let luma =
            (299 * u32::from(c.r()) + 587 * u32::from(c.g()) + 114 * u32::from(c.b())) / 1000;
        if luma >= 90 {
            BinaryColor::On
        } else {
            BinaryColor::Off
        }
    }
}

/// One layout per class of display; chosen from the display's size by [`Layout::for_size`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// 128x64 monochrome OLEDs (SSD1306, SH1106).
    Mono128x64,
    /// 240x240 colour (square ST7789 panels).
    Square240,
    /// 320x240 colour (ILI9341, 2.8" ST7789), framebuffers and anything larger and wide.
    Wide320x240,
}

impl Layout {
    /// Anything under 120 pixels in either direction gets the monochrome layout; a display at
    /// least 5:4 wide gets the wide one; the rest the square one. A display larger than the
    /// layout shows it centred.
    pub fn for_size(size: Size) -> Layout {
        if size.width < 120 || size.height < 120 {
            Layout::Mono128x64
        } else if size.width * 4 >= size.height * 5 && size.width >= 320 {
            Layout::Wide320x240
        } else {
            Layout::Square240
        }
    }

    /// The size the layout is designed for.
    pub fn size(self) -> Size {
        match self {
            Layout::Mono128x64 => Size::new(128, 64),
            Layout::Square240 => Size::new(240, 240),
            Layout::Wide320x240 => Size::new(320, 240),
        }
    }
}

const BACKGROUND: Rgb888 = Rgb888::new(12, 16, 24);
const HEADER: Rgb888 = Rgb888::new(30, 36, 50);
const TEXT: Rgb888 = Rgb888::new(240, 240, 240);
const DIM: Rgb888 = Rgb888::new(150, 156, 170);
const TRACK: Rgb888 = Rgb888::new(44, 50, 64);
const FEATURE: Rgb888 = Rgb888::new(28, 24, 28);

/// Each class keeps its colour everywhere (icon, label, bar) so the screen reads at a glance.
pub fn label_color(label: &str) -> Rgb888 {
    match label {
        "angry" => Rgb888::new(235, 70, 60),
        "disgust" => Rgb888::new(120, 190, 70),
        "fear" => Rgb888::new(170, 120, 230),
        "happy" => Rgb888::new(250, 205, 50),
        "neutral" => Rgb888::new(175, 180, 190),
        "sad" => Rgb888::new(80, 145, 235),
        "surprise" => Rgb888::new(250, 145, 50),
        "contempt" => Rgb888::new(200, 120, 150),
        _ => Rgb888::new(200, 200, 200),
    }
}

/// Short names that fit the part row of every layout.
pub fn part_short_name(part: &str) -> &str {
    match part {
        "eyebrows" => "brows",
        other => other,
    }
}

/// The part that drove the decision: the part network that gave the fused label its highest
/// probability (the fusion is a plain mean, so it is the part that pulled hardest toward the
/// winner). Ties go to the earlier part in the model's order.
pub fn driving_part(face: &FaceResult) -> Option<(&str, f32)> {
    let mut best: Option<(&str, f32)> = None;
    for (part, scores) in &face.parts {
        let Some(p) = scores.get(&face.label) else {
            continue;
        };
        if best.is_none_or(|(_, b)| p > b) {
            best = Some((part.as_str(), p));
        }
    }
    best
}

/// Length in pixels of a bar for probability `p` on a track `track` pixels long.
pub fn bar_length(p: f32, track: u32) -> u32 {
    let p = if p.is_finite() {
        p.clamp(0.0, 1.0)
    } else {
        0.0
    };
    (p * track as f32).round() as u32
}

fn percent(p: f32) -> String {
    format!("{:.0}%", (p.clamp(0.0, 1.0) * 100.0).round())
}

fn face_count(n: usize) -> String {
    match n {
        1 => "1 face".to_string(),
        n => format!("{n} faces"),
    }
}

fn fps_text(fps: Option<f32>) -> Option<String> {
    fps.filter(|f| f.is_finite() && *f >= 0.0)
        .map(|f| format!("{f:.1} fps"))
}

/// Draws the state on `target` with the layout its size calls for.
pub fn draw<D>(target: &mut D, state: &OutputState) -> Result<(), D::Error>
where
    D: DrawTarget,
    D::Color: UiColor,
{
    let size = target.bounding_box().size;
    let layout = Layout::for_size(size);
    draw_layout(target, state, layout)
}

/// Draws the state with a given layout, centred when the target is larger than the layout.
pub fn draw_layout<D>(target: &mut D, state: &OutputState, layout: Layout) -> Result<(), D::Error>
where
    D: DrawTarget,
    D::Color: UiColor,
{
    target.clear(D::Color::from_rgb(BACKGROUND))?;
    let size = target.bounding_box().size;
    let design = layout.size();
    let offset = Point::new(
        (size.width.saturating_sub(design.width) / 2) as i32,
        (size.height.saturating_sub(design.height) / 2) as i32,
    );
    let mut target = target.translated(offset);
    match layout {
        Layout::Mono128x64 => draw_mono(&mut target, state),
        Layout::Square240 => draw_square(&mut target, state),
        Layout::Wide320x240 => draw_wide(&mut target, state),
    }
}

fn c<C: UiColor>(rgb: Rgb888) -> C {
    C::from_rgb(rgb)
}

fn text<D>(
    target: &mut D,
    s: &str,
    at: Point,
    font: &MonoFont<'_>,
    color: Rgb888,
    alignment: Alignment,
) -> Result<(), D::Error>
where
    D: DrawTarget,
    D::Color: UiColor,
{
    let style = MonoTextStyle::new(font, c::<D::Color>(color));
    let layout = TextStyleBuilder::new()
        .alignment(alignment)
        .baseline(Baseline::Top)
        .build();
    Text::with_text_style(s, at, style, layout).draw(target)?;
    Ok(())
}

fn fill<D>(target: &mut D, area: Rectangle, color: Rgb888) -> Result<(), D::Error>
where
    D: DrawTarget,
    D::Color: UiColor,
{
    area.into_styled(PrimitiveStyle::with_fill(c::<D::Color>(color)))
        .draw(target)
}

/// The strip along the top: face count on the left, FPS on the right.
fn header<D>(target: &mut D, state: &OutputState, width: u32) -> Result<(), D::Error>
where
    D: DrawTarget,
    D::Color: UiColor,
{
    fill(
        target,
        Rectangle::new(Point::zero(), Size::new(width, 22)),
        HEADER,
    )?;
    let count = face_count(state.faces.len());
    text(
        target,
        &count,
        Point::new(8, 5),
        &PROFONT_10_POINT,
        TEXT,
        Alignment::Left,
    )?;
    if let Some(fps) = fps_text(state.fps) {
        let right = Point::new(width as i32 - 8, 5);
        text(
            target,
            &fps,
            right,
            &PROFONT_10_POINT,
            TEXT,
            Alignment::Right,
        )?;
    }
    Ok(())
}

/// The big label and confidence of the primary face, or "no face".
fn headline(state: &OutputState) -> (String, Option<f32>, Rgb888) {
    match state.primary_face() {
        Some(face) => (
            face.label.to_uppercase(),
            Some(face.confidence),
            label_color(&face.label),
        ),
        None => ("NO FACE".to_string(), None, DIM),
    }
}

/// The classes to draw bars for: the primary face's, in the model's order.
fn bars(state: &OutputState) -> Vec<(String, f32)> {
    state
        .primary_face()
        .map(|f| f.probabilities.0.clone())
        .unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
fn bar_rows<D>(
    target: &mut D,
    state: &OutputState,
    top: i32,
    pitch: i32,
    name_x: i32,
    bar_x: i32,
    bar_w: u32,
    right: i32,
) -> Result<(), D::Error>
where
    D: DrawTarget,
    D::Color: UiColor,
{
    let winner = state.primary_face().map(|f| f.label.as_str());
    for (i, (label, p)) in bars(state).iter().enumerate() {
        let y = top + i as i32 * pitch;
        let is_winner = winner == Some(label.as_str());
        let ink = if is_winner { TEXT } else { DIM };
        text(
            target,
            label,
            Point::new(name_x, y),
            &PROFONT_10_POINT,
            ink,
            Alignment::Left,
        )?;
        let track = Rectangle::new(Point::new(bar_x, y + 2), Size::new(bar_w, 9));
        fill(target, track, TRACK)?;
        let len = bar_length(*p, bar_w);
        if len > 0 {
            let bar = Rectangle::new(track.top_left, Size::new(len, 9));
            fill(target, bar, label_color(label))?;
        }
        text(
            target,
            &percent(*p),
            Point::new(right, y),
            &PROFONT_10_POINT,
            ink,
            Alignment::Right,
        )?;
    }
    Ok(())
}

/// "driven by" and one chip per part, the driving part filled in the label's colour.
fn part_row<D>(target: &mut D, state: &OutputState, top: i32, width: u32) -> Result<(), D::Error>
where
    D: DrawTarget,
    D::Color: UiColor,
{
    text(
        target,
        "driven by",
        Point::new(8, top),
        &FONT_6X10,
        DIM,
        Alignment::Left,
    )?;
    let face = state.primary_face();
    let driver = face.and_then(driving_part).map(|(p, _)| p);
    let parts: Vec<&str> = match face {
        Some(f) if !f.parts.is_empty() => f.parts.iter().map(|(p, _)| p.as_str()).collect(),
        _ => vec!["jaw", "eyebrows", "nose", "eyes", "mouth"],
    };
    let color = face.map_or(DIM, |f| label_color(&f.label));
    if let Some((_, p)) = face.and_then(driving_part) {
        let s = format!("{} {}", percent(p), face.map_or("", |f| f.label.as_str()));
        let right = Point::new(width as i32 - 8, top);
        text(target, &s, right, &FONT_6X10, DIM, Alignment::Right)?;
    }
    let n = parts.len().max(1) as u32;
    let gap = 4;
    let chip_w = (width - 16 - gap * (n - 1)) / n;
    let chip_top = top + 13;
    for (i, part) in parts.iter().enumerate() {
        let x = 8 + i as i32 * (chip_w + gap) as i32;
        let area = Rectangle::new(Point::new(x, chip_top), Size::new(chip_w, 22));
        let chip = RoundedRectangle::with_equal_corners(area, Size::new(5, 5));
        let centre = Point::new(x + chip_w as i32 / 2, chip_top + 5);
        let name = part_short_name(part);
        if Some(*part) == driver {
            chip.into_styled(PrimitiveStyle::with_fill(c::<D::Color>(color)))
                .draw(target)?;
            text(
                target,
                name,
                centre,
                &PROFONT_10_POINT,
                FEATURE,
                Alignment::Center,
            )?;
        } else {
            chip.into_styled(PrimitiveStyle::with_stroke(c::<D::Color>(TRACK), 2))
                .draw(target)?;
            text(
                target,
                name,
                centre,
                &PROFONT_10_POINT,
                DIM,
                Alignment::Center,
            )?;
        }
    }
    Ok(())
}

fn draw_square<D>(target: &mut D, state: &OutputState) -> Result<(), D::Error>
where
    D: DrawTarget,
    D::Color: UiColor,
{
    header(target, state, 240)?;
    let (label, confidence, color) = headline(state);
    let label_of = state.primary_face().map(|f| f.label.as_str());
    face_icon(target, Point::new(44, 64), 64, label_of)?;
    text(
        target,
        &label,
        Point::new(88, 34),
        &PROFONT_24_POINT,
        color,
        Alignment::Left,
    )?;
    if let Some(conf) = confidence {
        text(
            target,
            &percent(conf),
            Point::new(88, 66),
            &PROFONT_18_POINT,
            TEXT,
            Alignment::Left,
        )?;
    }
    bar_rows(target, state, 106, 14, 8, 68, 132, 232)?;
    part_row(target, state, 204, 240)
}

fn draw_wide<D>(target: &mut D, state: &OutputState) -> Result<(), D::Error>
where
    D: DrawTarget,
    D::Color: UiColor,
{
    header(target, state, 320)?;
    let (label, confidence, color) = headline(state);
    let label_of = state.primary_face().map(|f| f.label.as_str());
    face_icon(target, Point::new(72, 72), 80, label_of)?;
    text(
        target,
        &label,
        Point::new(72, 118),
        &PROFONT_24_POINT,
        color,
        Alignment::Center,
    )?;
    if let Some(conf) = confidence {
        text(
            target,
            &percent(conf),
            Point::new(72, 150),
            &PROFONT_18_POINT,
            TEXT,
            Alignment::Center,
        )?;
    }
    bar_rows(target, state, 34, 20, 146, 208, 72, 312)?;
    part_row(target, state, 186, 320)
}

fn draw_mono<D>(target: &mut D, state: &OutputState) -> Result<(), D::Error>
where
    D: DrawTarget,
    D::Color: UiColor,
{
    let count = face_count(state.faces.len());
    text(
        target,
        &count,
        Point::new(0, 0),
        &FONT_5X8,
        TEXT,
        Alignment::Left,
    )?;
    if let Some(fps) = fps_text(state.fps) {
        text(
            target,
            &fps,
            Point::new(128, 0),
            &FONT_5X8,
            TEXT,
            Alignment::Right,
        )?;
    }
    Line::new(Point::new(0, 9), Point::new(127, 9))
        .into_styled(PrimitiveStyle::with_stroke(c::<D::Color>(TEXT), 1))
        .draw(target)?;

    let face = state.primary_face();
    face_icon(
        target,
        Point::new(13, 24),
        24,
        face.map(|f| f.label.as_str()),
    )?;
    let (label, confidence, _) = headline(state);
    text(
        target,
        &label,
        Point::new(30, 11),
        &FONT_10X20,
        TEXT,
        Alignment::Left,
    )?;
    if let (Some(conf), Some(face)) = (confidence, face) {
        let mut line = percent(conf);
        if let Some((part, _)) = driving_part(face) {
            line = format!("{line} by {}", part_short_name(part));
        }
        text(
            target,
            &line,
            Point::new(30, 31),
            &FONT_6X10,
            TEXT,
            Alignment::Left,
        )?;
    }

    // A column per class: the OLED is too short for a row per class.
    for (i, (label, p)) in bars(state).iter().enumerate() {
        let x = 2 + i as i32 * 18;
        let track = Rectangle::new(Point::new(x, 42), Size::new(14, 15));
        track
            .into_styled(PrimitiveStyle::with_stroke(c::<D::Color>(TEXT), 1))
            .draw(target)?;
        let len = bar_length(*p, 13);
        if len > 0 {
            let bar = Rectangle::new(Point::new(x + 1, 56 - len as i32), Size::new(12, len));
            fill(target, bar, TEXT)?;
        }
        let short: String = label.chars().take(2).collect();
        text(
            target,
            &short,
            Point::new(x + 7, 58),
            &FONT_4X6,
            TEXT,
            Alignment::Center,
        )?;
    }
    Ok(())
}

/// A face drawn with primitives: the features change with the label. Designed on a 64-pixel
/// grid and scaled to `diameter`. `None` (no face) draws an empty outline.
pub fn face_icon<D>(
    target: &mut D,
    centre: Point,
    diameter: u32,
    label: Option<&str>,
) -> Result<(), D::Error>
where
    D: DrawTarget,
    D::Color: UiColor,
{
    let s = diameter as f32 / 64.0;
    let at = |x: f32, y: f32| centre + Point::new((x * s).round() as i32, (y * s).round() as i32);
    let len = |v: f32| ((v * s).round() as u32).max(1);
    let ink = c::<D::Color>(FEATURE);
    let stroke = PrimitiveStyle::with_stroke(ink, len(4.0));
    let dot = PrimitiveStyle::with_fill(ink);

    let Some(label) = label else {
        return Circle::with_center(centre, diameter)
            .into_styled(PrimitiveStyle::with_stroke(c::<D::Color>(DIM), len(3.0)))
            .draw(target);
    };
    Circle::with_center(centre, diameter)
        .into_styled(PrimitiveStyle::with_fill(c::<D::Color>(label_color(label))))
        .draw(target)?;

    let wide_eyes = matches!(label, "surprise" | "fear");
    let eye = if wide_eyes { 12.0 } else { 8.0 };
    for x in [-11.0, 11.0] {
        Circle::with_center(at(x, -6.0), len(eye))
            .into_styled(dot)
            .draw(target)?;
    }

    let brows: Option<[(f32, f32, f32, f32); 2]> = match label {
        "angry" => Some([(-19.0, -20.0, -5.0, -13.0), (19.0, -20.0, 5.0, -13.0)]),
        "sad" => Some([(-19.0, -14.0, -5.0, -19.0), (19.0, -14.0, 5.0, -19.0)]),
        "fear" => Some([(-19.0, -18.0, -5.0, -23.0), (19.0, -18.0, 5.0, -23.0)]),
        "surprise" => Some([(-18.0, -23.0, -5.0, -24.0), (18.0, -23.0, 5.0, -24.0)]),
        "disgust" => Some([(-19.0, -16.0, -5.0, -13.0), (19.0, -21.0, 5.0, -19.0)]),
        _ => None,
    };
    for (x0, y0, x1, y1) in brows.into_iter().flatten() {
        Line::new(at(x0, y0), at(x1, y1))
            .into_styled(stroke)
            .draw(target)?;
    }

    match label {
        "happy" => Arc::with_center(at(0.0, 2.0), len(36.0), 25.0.deg(), 130.0.deg())
            .into_styled(stroke)
            .draw(target),
        "sad" => Arc::with_center(at(0.0, 30.0), len(30.0), 215.0.deg(), 110.0.deg())
            .into_styled(stroke)
            .draw(target),
        "angry" => Arc::with_center(at(0.0, 28.0), len(26.0), 225.0.deg(), 90.0.deg())
            .into_styled(stroke)
            .draw(target),
        "surprise" => Circle::with_center(at(0.0, 15.0), len(14.0))
            .into_styled(dot)
            .draw(target),
        "fear" => {
            let points = [
                at(-13.0, 16.0),
                at(-6.5, 12.0),
                at(0.0, 16.0),
                at(6.5, 12.0),
                at(13.0, 16.0),
            ];
            Polyline::new(&points).into_styled(stroke).draw(target)
        }
        "disgust" => Line::new(at(-12.0, 17.0), at(12.0, 11.0))
            .into_styled(stroke)
            .draw(target),
        _ => Line::new(at(-12.0, 14.0), at(12.0, 14.0))
            .into_styled(stroke)
            .draw(target),
    }
}
