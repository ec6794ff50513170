//! The state every output reads: the faces of one frame and which of them the outputs describe.
//! Displays, GPIO lines and the event sinks all consume it, so it lives below all of them.

use crate::classify::FaceResult;

/// The input of every output stage (display and GPIO): the faces of one frame.
#[derive(Debug, Clone, Copy)]
pub struct OutputState<'a> {
    pub faces: &'a [FaceResult],
    /// Index into `faces` of the face the outputs describe; `None` when there is none.
    pub primary: Option<usize>,
    /// Frames per second of the loop feeding the outputs; `None` for still images.
    pub fps: Option<f32>,
}

impl<'a> OutputState<'a> {
    /// The primary face is the largest box: the person nearest the camera.
    pub fn new(faces: &'a [FaceResult], fps: Option<f32>) -> Self {
        OutputState {
            faces,
            primary: primary_face(faces),
            fps,
        }
    }

    pub fn primary_face(&self) -> Option<&'a FaceResult> {
        self.primary.and_then(|i| self.faces.get(i))
    }
}

/// Index of the face with the largest box area; the first one on ties.
pub fn primary_face(faces: &[FaceResult]) -> Option<usize> {
    let area = |f: &FaceResult| f.bbox[2].max(0.0) * f.bbox[3].max(0.0);
    let mut best: Option<(usize, f32)> = None;
    for (i, face) in faces.iter().enumerate() {
        let a = area(face);
        if best.is_none_or(|(_, b)| a > b) {
            best = Some((i, a));
        }
    }
    best.map(|(i, _)| i)
}
