//! What every section of the report uses: selecting samples by label, their medians, number
//! formatting, and a line on a chart.

use std::collections::BTreeMap;

use anyhow::Result;
use plotters::{coord::types::RangedCoordf64, prelude::*};

use super::{Sample, median};

/// The samples of `section` whose labels include every `(name, value)` of `want`.
pub fn matching<'a>(
    samples: &'a [Sample],
    section: &'a str,
    want: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = &'a Sample> {
    samples.iter().filter(move |s| s.section == section && want.iter().all(|(n, v)| s.label(n) == *v))
}

/// Median of the samples of `section` whose labels include every `(name, value)` of `want`.
pub fn med(samples: &[Sample], section: &str, want: &[(&str, &str)]) -> f64 {
    median(&matching(samples, section, want).map(|s| s.value).collect::<Vec<_>>())
}

/// The values of [`matching`] samples by round (label `rep`; "" for a run without rounds).
pub fn by_round(samples: &[Sample], section: &str, want: &[(&str, &str)]) -> BTreeMap<String, f64> {
    matching(samples, section, want).map(|s| (s.label("rep").to_string(), s.value)).collect()
}

pub fn fmt(v: f64, digits: usize) -> String {
    if v.is_nan() { "n/a".to_string() } else { format!("{v:.digits$}") }
}

/// A chart with f64 axes.
pub type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws `pts` as a line of palette colour `i` and `width`, named `name` in the legend.
pub fn line<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    i: usize,
    name: &str,
    pts: &[(f64, f64)],
    width: u32,
) -> Result<RGBAColor>
where
    DB::ErrorType: 'static,
{
    let color = Palette99::pick(i).to_rgba();
    chart
        .draw_series(LineSeries::new(pts.to_vec(), color.stroke_width(width)))?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width)));
    Ok(color)
}
