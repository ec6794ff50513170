//! Accuracy of a model on a labelled folder tree (`<class>/<image>`), as a confusion matrix.
//!
//! Lets a user check, on the board and through tract, the numbers the model card reports from
//! Python. It only counts; running the model is [`crate::classify`]'s job.

use std::fmt::Write as _;

use serde::Serialize;

/// Dataset class names that mean the same as a model label (CK+ uses anger/sadness).
const ALIASES: &[(&str, &str)] = &[("anger", "angry"), ("sadness", "sad")];

/// The model label index for a dataset class name, if the model has that class.
pub fn label_index(class: &str, labels: &[String]) -> Option<usize> {
    let class = class.to_ascii_lowercase();
    let canonical = ALIASES
        .iter()
        .find(|(alias, _)| *alias == class)
        .map_or(class.as_str(), |(_, label)| *label);
    labels.iter().position(|l| l == canonical)
}

#[derive(Debug, Clone, Serialize)]
pub struct Confusion {
    pub labels: Vec<String>,
    /// `matrix[truth][predicted]` counts.
    pub matrix: Vec<Vec<u64>>,
    /// Images whose class the model does not have (e.g. CK+'s contempt).
    pub skipped_unknown_class: u64,
    /// Images in which no face was found (only with detection).
    pub no_face: u64,
}

impl Confusion {
    pub fn new(labels: &[String]) -> Self {
        Confusion {
            labels: labels.to_vec(),
            matrix: vec![vec![0; labels.len()]; labels.len()],
            skipped_unknown_class: 0,
            no_face: 0,
        }
    }

    pub fn add(&mut self, truth: usize, predicted: usize) {
        self.matrix[truth][predicted] += 1;
    }

    pub fn total(&self) -> u64 {
        self.matrix.iter().flatten().sum()
    }

    /// Fraction of counted images whose prediction is right; `None` before any is counted.
    pub fn accuracy(&self) -> Option<f64> {
        let correct: u64 = (0..self.labels.len()).map(|i| self.matrix[i][i]).sum();
        let total = self.total();
        (total > 0).then(|| correct as f64 / total as f64)
    }

    /// Per-class recall; `None` for a class without images.
    pub fn recall(&self) -> Vec<Option<f64>> {
        self.matrix
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let n: u64 = row.iter().sum();
                (n > 0).then(|| row[i] as f64 / n as f64)
            })
            .collect()
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let width = self
            .labels
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(5)
            .max(6);
        let _ = write!(out, "{:>width$} |", "truth");
        for l in &self.labels {
            let _ = write!(out, " {:>8.8}", l);
        }
        let _ = writeln!(out, " | recall");
        for (i, row) in self.matrix.iter().enumerate() {
            let _ = write!(out, "{:>width$} |", self.labels[i]);
            for n in row {
                let _ = write!(out, " {n:>8}");
            }
            let recall = self.recall()[i].map_or("-".into(), |r| format!("{:.1}%", r * 100.0));
            let _ = writeln!(out, " | {recall}");
        }
        let accuracy = self
            .accuracy()
            .map_or("-".into(), |a| format!("{:.2}%", a * 100.0));
        let _ = writeln!(out, "accuracy {accuracy} over {} images", self.total());
        if self.skipped_unknown_class > 0 {
            let _ = writeln!(
                out,
                "skipped {} images of classes the model does not have",
                self.skipped_unknown_class
            );
        }
        if self.no_face > 0 {
            let _ = writeln!(
                out,
                "{} images had no detected face (not counted)",
                self.no_face
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        ["angry", "happy", "sad"].map(String::from).to_vec()
    }

    #[test]
    fn aliases_and_case_map_to_model_labels() {
        let l = labels();
        assert_eq!(label_index("anger", &l), Some(0));
        assert_eq!(label_index("Sadness", &l), Some(2));
        assert_eq!(label_index("happy", &l), Some(1));
        assert_eq!(label_index("contempt", &l), None);
    }

    #[test]
    fn accuracy_and_recall_count_the_matrix() {
        let mut c = Confusion::new(&labels());
        assert_eq!(c.accuracy(), None);
        c.add(0, 0);
        c.add(0, 1);
        c.add(1, 1);
        c.add(1, 1);
        assert_eq!(c.accuracy(), Some(0.75));
        assert_eq!(c.recall(), vec![Some(0.5), Some(1.0), None]);
        let table = c.table();
        assert!(table.contains("accuracy 75.00% over 4 images"), "{table}");
    }
}
