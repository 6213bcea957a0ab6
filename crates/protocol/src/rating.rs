//! Ratings, as web-vitals and CrUX define them: good ≤ `good`, poor > `poor`, in between needs
//! improvement. The collector recomputes every rating from the value; it never trusts the client's.

use serde::{Deserialize, Serialize};

/// How a single value compares with its metric's thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rating {
    Good,
    NeedsImprovement,
    Poor,
}

impl Rating {
    /// The wire and storage spelling (`good`, `needs-improvement`, `poor`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Rating::Good => "good",
            Rating::NeedsImprovement => "needs-improvement",
            Rating::Poor => "poor",
        }
    }
}

/// The two boundaries of a metric: values ≤ `good` are good, values > `poor` are poor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub good: f64,
    pub poor: f64,
}

impl Thresholds {
    /// Rates `value` against these thresholds.
    pub fn rate(self, value: f64) -> Rating {
        if value <= self.good {
            Rating::Good
        } else if value <= self.poor {
            Rating::NeedsImprovement
        } else {
            Rating::Poor
        }
    }
}
