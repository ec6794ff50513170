//! From BlazeFace's raw outputs to faces in frame pixels: SSD anchors, the letterbox that maps
//! input pixels back to the frame, box and keypoint decoding, and weighted non-maximum
//! suppression.

use super::{BBox, Face, Point, COORDS, KEYPOINTS, SCORE_CLIP};

/// An SSD anchor centre in normalised input coordinates (anchor size is fixed at 1x1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Anchor {
    pub(super) x: f32,
    pub(super) y: f32,
}

/// MediaPipe `SsdAnchorsCalculator` with the BlazeFace options: `num_layers` = strides.len(),
/// aspect ratio 1.0 plus one interpolated-scale anchor per layer (2 per layer), consecutive
/// layers with the same stride share one grid, anchor offset 0.5, `fixed_anchor_size` (so only
/// centres matter). Order: grid, then row, column, anchor, as the model outputs them.
/// Returns the anchors and the number of anchors in each grid.
pub(super) fn generate_anchors(input_size: usize, strides: &[usize]) -> (Vec<Anchor>, Vec<usize>) {
    let mut anchors = Vec::new();
    let mut groups = Vec::new();
    let mut layer = 0;
    while layer < strides.len() {
        let stride = strides[layer];
        let mut per_cell = 0;
        while layer < strides.len() && strides[layer] == stride {
            per_cell += 2;
            layer += 1;
        }
        let cells = input_size.div_ceil(stride.max(1));
        for row in 0..cells {
            for col in 0..cells {
                let a = Anchor {
                    x: (col as f32 + 0.5) / cells as f32,
                    y: (row as f32 + 0.5) / cells as f32,
                };
                anchors.extend(std::iter::repeat_n(a, per_cell));
            }
        }
        groups.push(cells * cells * per_cell);
    }
    (anchors, groups)
}

/// Placement of a frame inside the square model input: scaled to fit, aspect kept, centred,
/// padded with black. Coordinates here are input pixels (`0..size`) and frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Letterbox {
    pub(super) size: u32,
    pub(super) frame_w: u32,
    pub(super) frame_h: u32,
    /// Size of the scaled frame inside the input (at least 1x1).
    pub(super) scaled_w: u32,
    pub(super) scaled_h: u32,
    pub(super) pad_x: u32,
    pub(super) pad_y: u32,
}

impl Letterbox {
    pub(super) fn new(frame_w: u32, frame_h: u32, size: u32) -> Letterbox {
        let longest = frame_w.max(frame_h).max(1) as f64;
        let fit = |side: u32| {
            let s = (side as f64 * size as f64 / longest).round();
            (s as u32).clamp(1, size)
        };
        let scaled_w = fit(frame_w);
        let scaled_h = fit(frame_h);
        Letterbox {
            size,
            frame_w,
            frame_h,
            scaled_w,
            scaled_h,
            pad_x: (size - scaled_w) / 2,
            pad_y: (size - scaled_h) / 2,
        }
    }

    pub(super) fn sx(&self) -> f32 {
        self.frame_w as f32 / self.scaled_w as f32
    }

    pub(super) fn sy(&self) -> f32 {
        self.frame_h as f32 / self.scaled_h as f32
    }

    /// Input pixels -> frame pixels.
    pub(super) fn frame_from_input(&self, x: f32, y: f32) -> (f32, f32) {
        (
            (x - self.pad_x as f32) * self.sx(),
            (y - self.pad_y as f32) * self.sy(),
        )
    }

    /// Frame pixels -> input pixels.
    #[cfg(test)]
    pub(super) fn input_from_frame(&self, x: f32, y: f32) -> (f32, f32) {
        (
            x / self.sx() + self.pad_x as f32,
            y / self.sy() + self.pad_y as f32,
        )
    }

    /// The NHWC input tensor data: the frame scaled into place, RGB mapped to [-1, 1], padding
    /// black (-1). Shrinking by 2x or more averages whole source-pixel blocks (each source pixel
    /// is read once, and it antialiases); smaller ratios and enlarging use a triangle
    /// (bilinear) filter.
    #[cfg(test)]
    pub(super) fn tensor_data(&self, image: &image::RgbImage) -> Vec<f32> {
        let mut data = vec![0.0; self.tensor_len()];
        self.fill(image, &mut data);
        data
    }

    #[cfg(test)]
    pub(super) fn tensor_len(&self) -> usize {
        (self.size * self.size * 3) as usize
    }

    /// [`Letterbox::tensor_data`] written into `data` (`size * size * 3` values). Shrinking by
    /// 2x or more (any camera frame of 256 pixels or more into the short detector) allocates
    /// two small buffers (a row of column sums); a smaller shrink or an enlargement allocates the
    /// scaled frame.
    pub(super) fn fill(&self, image: &image::RgbImage, data: &mut [f32]) {
        if image.dimensions() == (self.scaled_w, self.scaled_h) {
            return self.place(image.as_raw(), 3, data);
        }
        if self.shrink() >= 2.0 {
            return self.shrink_into(image.as_raw(), 3, data);
        }
        self.place(self.scale(image).as_raw(), 3, data)
    }

    /// [`Letterbox::fill`] of a gray frame, equal to that of the gray expanded to RGB: the
    /// scaling works per channel, so it scales the one channel (a third of the work, and no RGB
    /// frame) and writes each value to all three.
    pub(super) fn fill_gray(&self, gray: &image::GrayImage, data: &mut [f32]) {
        if gray.dimensions() == (self.scaled_w, self.scaled_h) {
            return self.place(gray.as_raw(), 1, data);
        }
        if self.shrink() >= 2.0 {
            return self.shrink_into(gray.as_raw(), 1, data);
        }
        self.place(self.scale(gray).as_raw(), 1, data)
    }

    #[cfg(test)]
    pub(super) fn tensor_data_gray(&self, gray: &image::GrayImage) -> Vec<f32> {
        let mut data = vec![0.0; self.tensor_len()];
        self.fill_gray(gray, &mut data);
        data
    }

    /// How many frame pixels one input pixel spans, along the tighter axis.
    pub(super) fn shrink(&self) -> f32 {
        (self.frame_w as f32 / self.scaled_w as f32).min(self.frame_h as f32 / self.scaled_h as f32)
    }

    /// [`Letterbox::place`] of `image::imageops::thumbnail(frame, scaled_w, scaled_h)`, for a
    /// frame of `channels` (1 or 3) interleaved bytes shrunk by 2x or more, without building the
    /// scaled frame. Each output pixel is the rounded integer mean of the same block of frame
    /// pixels that `thumbnail` averages (its block bounds come from the same f32 arithmetic), so
    /// the result is identical. At 2x or more every block is at least 2x2 pixels, the only case
    /// of `thumbnail` this reproduces.
    ///
    /// A block row of frame rows is first summed down the columns (contiguous bytes: the compiler
    /// vectorises it), then across each block's columns, so the per-pixel work is one vector add
    /// rather than a loop over every block's pixels. It allocates that row of column sums and the
    /// column blocks' bounds.
    pub(super) fn shrink_into(&self, src: &[u8], channels: usize, data: &mut [f32]) {
        match channels {
            1 => self.shrink_channels::<1>(src, data),
            _ => self.shrink_channels::<3>(src, data),
        }
    }

    fn shrink_channels<const C: usize>(&self, src: &[u8], data: &mut [f32]) {
        let size = self.size as usize;
        data.fill(-1.0);
        let lut: [f32; 256] = std::array::from_fn(|v| v as f32 / 127.5 - 1.0);
        let (width, height) = (self.frame_w, self.frame_h);
        let x_ratio = width as f32 / self.scaled_w as f32;
        let y_ratio = height as f32 / self.scaled_h as f32;
        let row_len = width as usize * C;
        // Each output column's block of frame columns; the same for every row.
        let blocks: Vec<(usize, usize)> = (0..self.scaled_w)
            .map(|out_x| {
                let left_f = out_x as f32 * x_ratio;
                let left = (left_f.ceil() as u32).clamp(0, width - 1);
                let right = ((left_f + x_ratio).ceil() as u32).clamp(left, width);
                (left as usize, right as usize)
            })
            .collect();
        let mut column_sums = vec![0u32; row_len];
        for out_y in 0..self.scaled_h {
            let bottom_f = out_y as f32 * y_ratio;
            let bottom = (bottom_f.ceil() as u32).clamp(0, height - 1);
            let top = ((bottom_f + y_ratio).ceil() as u32).clamp(bottom, height);
            column_sums.fill(0);
            for row in src[bottom as usize * row_len..top as usize * row_len].chunks_exact(row_len)
            {
                for (sum, &v) in column_sums.iter_mut().zip(row) {
                    *sum += u32::from(v);
                }
            }
            let start = ((out_y + self.pad_y) as usize * size + self.pad_x as usize) * 3;
            let out_row = &mut data[start..start + self.scaled_w as usize * 3];
            for (dst, &(left, right)) in out_row.chunks_exact_mut(3).zip(&blocks) {
                let mut sums = [0u32; C];
                let block = &column_sums[left * C..right * C];
                for pixel in block.chunks_exact(C) {
                    for (sum, &v) in sums.iter_mut().zip(pixel) {
                        *sum += v;
                    }
                }
                let n = (right - left) as u32 * (top - bottom);
                for (c, d) in dst.iter_mut().enumerate() {
                    let mean = (sums[c.min(C - 1)] + n / 2) / n.max(1);
                    *d = lut[mean.min(255) as usize];
                }
            }
        }
    }

    /// The frame resized to the scaled size with a triangle (bilinear) filter: the letterbox of a
    /// frame that shrinks by less than 2x, or grows.
    pub(super) fn scale<P: image::Pixel<Subpixel = u8> + 'static>(
        &self,
        frame: &image::ImageBuffer<P, Vec<u8>>,
    ) -> image::ImageBuffer<P, Vec<u8>> {
        image::imageops::resize(
            frame,
            self.scaled_w,
            self.scaled_h,
            image::imageops::FilterType::Triangle,
        )
    }

    /// Writes a `scaled_w x scaled_h` image of `channels` (1 or 3) interleaved bytes into the
    /// padded NHWC tensor `data`; one channel is replicated into R, G and B.
    pub(super) fn place(&self, src: &[u8], channels: usize, data: &mut [f32]) {
        let size = self.size as usize;
        data.fill(-1.0);
        let lut: [f32; 256] = std::array::from_fn(|v| v as f32 / 127.5 - 1.0);
        let width = self.scaled_w as usize;
        for (y, row) in src
            .chunks_exact(width * channels)
            .take(self.scaled_h as usize)
            .enumerate()
        {
            let start = ((y + self.pad_y as usize) * size + self.pad_x as usize) * 3;
            let dst = &mut data[start..start + width * 3];
            if channels == 3 {
                for (d, &v) in dst.iter_mut().zip(row) {
                    *d = lut[v as usize];
                }
            } else {
                for (d, &v) in dst.chunks_exact_mut(3).zip(row) {
                    d.fill(lut[v as usize]);
                }
            }
        }
    }
}

/// A decoded detection in input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct RawDetection {
    pub(super) xmin: f32,
    pub(super) ymin: f32,
    pub(super) xmax: f32,
    pub(super) ymax: f32,
    pub(super) keypoints: [(f32, f32); KEYPOINTS],
    pub(super) score: f32,
}

impl RawDetection {
    pub(super) fn bbox(&self) -> BBox {
        BBox {
            x: self.xmin,
            y: self.ymin,
            w: self.xmax - self.xmin,
            h: self.ymax - self.ymin,
        }
    }

    pub(super) fn iou(&self, other: &RawDetection) -> f32 {
        self.bbox().iou(&other.bbox())
    }

    /// This detection with every point (box corners, keypoints) moved by `f`: from input to
    /// frame pixels, say.
    pub(super) fn map(&self, f: impl Fn(f32, f32) -> (f32, f32)) -> RawDetection {
        let (xmin, ymin) = f(self.xmin, self.ymin);
        let (xmax, ymax) = f(self.xmax, self.ymax);
        RawDetection {
            xmin,
            ymin,
            xmax,
            ymax,
            keypoints: self.keypoints.map(|(x, y)| f(x, y)),
            score: self.score,
        }
    }

    /// The face this detection (in frame pixels) describes.
    pub(super) fn to_face(self) -> Face {
        Face {
            bbox: self.bbox(),
            score: self.score,
            keypoints: self.keypoints.map(|(x, y)| Point { x, y }),
        }
    }

    pub(super) fn is_finite(&self) -> bool {
        [self.xmin, self.ymin, self.xmax, self.ymax, self.score]
            .iter()
            .chain(self.keypoints.iter().flat_map(|(x, y)| [x, y]))
            .all(|v| v.is_finite())
    }
}

pub(super) fn sigmoid(logit: f32) -> f32 {
    1.0 / (1.0 + (-logit.clamp(-SCORE_CLIP, SCORE_CLIP)).exp())
}

/// Decodes one output group (scores `[n]`, regressors `[n x 16]`) against its anchors, keeping
/// detections scoring at least `threshold`. MediaPipe's TensorsToDetections with
/// x/y/w/h scales = input size and unit anchors, so raw values are input pixels.
pub(super) fn decode(
    scores: &[f32],
    boxes: &[f32],
    anchors: &[Anchor],
    input_size: f32,
    threshold: f32,
    out: &mut Vec<RawDetection>,
) {
    for ((&logit, raw), anchor) in scores.iter().zip(boxes.chunks_exact(COORDS)).zip(anchors) {
        let score = sigmoid(logit);
        if score.is_nan() || score < threshold {
            continue;
        }
        let ax = anchor.x * input_size;
        let ay = anchor.y * input_size;
        let (cx, cy, w, h) = (raw[0] + ax, raw[1] + ay, raw[2], raw[3]);
        let mut keypoints = [(0.0, 0.0); KEYPOINTS];
        for (k, kp) in keypoints.iter_mut().enumerate() {
            *kp = (raw[4 + 2 * k] + ax, raw[5 + 2 * k] + ay);
        }
        let det = RawDetection {
            xmin: cx - w / 2.0,
            ymin: cy - h / 2.0,
            xmax: cx + w / 2.0,
            ymax: cy + h / 2.0,
            keypoints,
            score,
        };
        if det.is_finite() {
            out.push(det);
        }
    }
}

/// MediaPipe's weighted non-maximum suppression: take the best remaining detection, gather
/// every remaining detection overlapping it by more than `iou_threshold` (itself included),
/// and output their score-weighted average box and keypoints with the best score.
pub(super) fn weighted_nms(mut dets: Vec<RawDetection>, iou_threshold: f32) -> Vec<RawDetection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut taken = vec![false; dets.len()];
    let mut out = Vec::new();
    for i in 0..dets.len() {
        if taken[i] {
            continue;
        }
        taken[i] = true;
        let top = dets[i];
        let mut total = top.score;
        let mut acc = [0.0f32; 4 + 2 * KEYPOINTS];
        let mut add = |d: &RawDetection| {
            let vals = [d.xmin, d.ymin, d.xmax, d.ymax];
            for (a, v) in acc.iter_mut().zip(
                vals.iter()
                    .copied()
                    .chain(d.keypoints.iter().flat_map(|&(x, y)| [x, y])),
            ) {
                *a += v * d.score;
            }
        };
        add(&top);
        for j in i + 1..dets.len() {
            if !taken[j] && dets[j].iou(&top) > iou_threshold {
                taken[j] = true;
                total += dets[j].score;
                add(&dets[j]);
            }
        }
        if total <= 0.0 {
            // All weights zero (score threshold 0 and saturated logits): keep the top as is.
            out.push(top);
            continue;
        }
        let m: Vec<f32> = acc.iter().map(|a| a / total).collect();
        let mut keypoints = [(0.0, 0.0); KEYPOINTS];
        for (k, kp) in keypoints.iter_mut().enumerate() {
            *kp = (m[4 + 2 * k], m[5 + 2 * k]);
        }
        out.push(RawDetection {
            xmin: m[0],
            ymin: m[1],
            xmax: m[2],
            ymax: m[3],
            keypoints,
            score: top.score,
        });
    }
    out
}
