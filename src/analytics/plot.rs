//! Line charts drawn into an RGB canvas: axes with 1-2-5 ticks, grid, tick labels, axis labels,
//! a title and a legend, lines with markers, and a dashed reference diagonal. Enough for the
//! report's training curves, ROC curves and reliability diagrams, without a plotting crate.

use anyhow::Result;

use super::{font, png};

pub type Rgb = [u8; 3];

pub const WHITE: Rgb = [255, 255, 255];
pub const INK: Rgb = [34, 34, 34];
pub const GRID: Rgb = [225, 225, 225];
pub const REFERENCE: Rgb = [150, 150, 150];
/// Series colours (the tab10 palette).
pub const PALETTE: [Rgb; 6] =
    [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75]];

/// An RGB image being drawn on.
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize) -> Self {
        Self { width, height, pixels: WHITE.repeat(width * height) }
    }

    pub fn get(&self, x: usize, y: usize) -> Rgb {
        let i = (y * self.width + x) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    pub fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&c);
        }
    }

    pub fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb) {
        for y in y0..=y1 {
            for x in x0..=x1 {
                self.set(x, y, c);
            }
        }
    }

    pub fn rect_outline(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb) {
        self.fill_rect(x0, y0, x1, y0, c);
        self.fill_rect(x0, y1, x1, y1, c);
        self.fill_rect(x0, y0, x0, y1, c);
        self.fill_rect(x1, y0, x1, y1, c);
    }

    /// A line `thickness` pixels wide; with `dash` = Some(n) drawn n pixels on, n off.
    pub fn line(&mut self, a: (f64, f64), b: (f64, f64), c: Rgb, thickness: i64, dash: Option<usize>) {
        let steps = (b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil().max(1.0) as usize;
        let lo = -(thickness - 1) / 2;
        for s in 0..=steps {
            if dash.is_some_and(|n| (s / n) % 2 == 1) {
                continue;
            }
            let t = s as f64 / steps as f64;
            let (x, y) = ((a.0 + (b.0 - a.0) * t).round() as i64, (a.1 + (b.1 - a.1) * t).round() as i64);
            self.fill_rect(x + lo, y + lo, x + lo + thickness - 1, y + lo + thickness - 1, c);
        }
    }

    /// Text with its top-left corner at (x, y).
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: usize, c: Rgb) {
        font::render(text, scale, |dx, dy| self.set(x + dx as i64, y + dy as i64, c));
    }

    /// Text rotated a quarter turn counter-clockwise (reads bottom to top), its left end at the
    /// bottom: (x, y) is the top-left corner of its bounding box.
    pub fn text_up(&mut self, x: i64, y: i64, text: &str, scale: usize, c: Rgb) {
        let w = font::width(text, scale) as i64;
        font::render(text, scale, |dx, dy| self.set(x + dy as i64, y + w - 1 - dx as i64, c));
    }

    pub fn png(&self) -> Result<Vec<u8>> {
        png::encode_rgb(self.width as u32, self.height as u32, &self.pixels)
    }
}

/// One curve of a chart.
pub struct Series {
    pub label: String,
    pub color: Rgb,
    pub points: Vec<(f64, f64)>,
    /// Draw a square marker at every point (for short series: epochs, calibration bins).
    pub markers: bool,
}

/// Where the legend box goes.
#[derive(Clone, Copy)]
pub enum Corner {
    TopLeft,
    TopRight,
    BottomRight,
}

pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
    pub series: Vec<Series>,
    /// Draw the dashed line y = x (ROC chance line, perfect calibration).
    pub diagonal: bool,
    pub legend: Corner,
}

/// Tick positions covering [lo, hi] with a 1-2-5 step, about `target` of them, and the number
/// of decimals their labels need.
pub fn ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, usize) {
    let span = (hi - lo).abs().max(1e-12);
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw * 0.999).unwrap_or(10.0 * mag);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    ((first..=last).map(|k| k as f64 * step).collect(), decimals)
}

/// A range padded to round numbers around the values: [min, max] widened to the enclosing ticks.
pub fn nice_range(values: impl IntoIterator<Item = f64>, include_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.into_iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if include_zero {
        lo = lo.min(0.0);
    }
    if hi - lo < 1e-12 {
        let pad = if hi.abs() > 1e-12 { hi.abs() * 0.05 } else { 1.0 };
        (lo, hi) = (lo - pad, hi + pad);
    }
    let (t, _) = ticks(lo, hi, 5);
    let step = if t.len() > 1 { t[1] - t[0] } else { hi - lo };
    ((lo / step).floor() * step, (hi / step).ceil() * step)
}

const TITLE_SCALE: usize = 2;

impl Chart {
    /// Draws the chart into the rectangle (x, y, width, height) of the canvas.
    pub fn draw(&self, cv: &mut Canvas, x: i64, y: i64, width: i64, height: i64) {
        let (left, right, top, bottom) = (x + 62, x + width - 16, y + 34, y + height - 44);
        let tw = font::width(&self.title, TITLE_SCALE) as i64;
        cv.text(x + (width - tw).max(0) / 2, y + 8, &self.title, TITLE_SCALE, INK);
        let (x0, x1) = self.x_range;
        let (y0, y1) = self.y_range;
        let px = |v: f64| left as f64 + (v - x0) / (x1 - x0).max(1e-300) * (right - left) as f64;
        let py = |v: f64| bottom as f64 - (v - y0) / (y1 - y0).max(1e-300) * (bottom - top) as f64;
        let (xt, xd) = ticks(x0, x1, 6);
        let (yt, yd) = ticks(y0, y1, 6);
        for &t in &xt {
            let p = px(t).round() as i64;
            cv.fill_rect(p, top, p, bottom, GRID);
            let label = format!("{t:.xd$}");
            let w = font::width(&label, 1) as i64;
            cv.fill_rect(p, bottom, p, bottom + 4, INK);
            cv.text(p - w / 2, bottom + 8, &label, 1, INK);
        }
        for &t in &yt {
            let p = py(t).round() as i64;
            cv.fill_rect(left, p, right, p, GRID);
            let label = format!("{t:.yd$}");
            let w = font::width(&label, 1) as i64;
            cv.fill_rect(left - 4, p, left, p, INK);
            cv.text(left - 8 - w, p - 3, &label, 1, INK);
        }
        cv.rect_outline(left, top, right, bottom, INK);
        let xw = font::width(&self.x_label, 1) as i64;
        cv.text((left + right - xw) / 2, bottom + 24, &self.x_label, 1, INK);
        let yh = font::width(&self.y_label, 1) as i64;
        cv.text_up(x + 6, (top + bottom - yh) / 2, &self.y_label, 1, INK);
        if self.diagonal {
            let (lo, hi) = (x0.max(y0), x1.min(y1));
            if hi > lo {
                cv.line((px(lo), py(lo)), (px(hi), py(hi)), REFERENCE, 1, Some(5));
            }
        }
        let inside = |(a, b): (f64, f64)| a >= x0 && a <= x1 && b >= y0 && b <= y1;
        for s in &self.series {
            let pts: Vec<(f64, f64)> =
                s.points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()).copied().collect();
            for w in pts.windows(2) {
                if inside(w[0]) && inside(w[1]) {
                    cv.line((px(w[0].0), py(w[0].1)), (px(w[1].0), py(w[1].1)), s.color, 2, None);
                }
            }
            if s.markers {
                for &p in pts.iter().filter(|p| inside(**p)) {
                    let (a, b) = (px(p.0).round() as i64, py(p.1).round() as i64);
                    cv.fill_rect(a - 3, b - 3, a + 3, b + 3, s.color);
                }
            }
        }
        self.draw_legend(cv, (left, top, right, bottom));
    }

    fn draw_legend(&self, cv: &mut Canvas, (left, top, right, bottom): (i64, i64, i64, i64)) {
        if self.series.is_empty() {
            return;
        }
        let w = self.series.iter().map(|s| font::width(&s.label, 1)).max().unwrap_or(0) as i64 + 34;
        let h = self.series.len() as i64 * 14 + 8;
        let (lx, ly) = match self.legend {
            Corner::TopLeft => (left + 8, top + 8),
            Corner::TopRight => (right - 8 - w, top + 8),
            Corner::BottomRight => (right - 8 - w, bottom - 8 - h),
        };
        cv.fill_rect(lx, ly, lx + w, ly + h, WHITE);
        cv.rect_outline(lx, ly, lx + w, ly + h, REFERENCE);
        for (i, s) in self.series.iter().enumerate() {
            let yy = ly + 8 + i as i64 * 14;
            cv.fill_rect(lx + 6, yy + 2, lx + 24, yy + 4, s.color);
            cv.text(lx + 30, yy, &s.label, 1, INK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let (t, d) = ticks(0.0, 1.0, 5);
        assert_eq!(t, vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        assert_eq!(d, 1);
        let (t, d) = ticks(1.0, 10.0, 6);
        assert_eq!((t.first().copied(), t.last().copied(), d), (Some(2.0), Some(10.0), 0));
        let (t, d) = ticks(0.0, 0.004, 4);
        assert_eq!((t.len(), d), (5, 3));
        assert_eq!(nice_range([0.013, 0.061], true), (0.0, 0.08));
        assert_eq!(nice_range([0.5, 0.5], false).0 < 0.5, true);
        assert_eq!(nice_range([f64::NAN], false), (0.0, 1.0));
    }

    #[test]
    fn chart_draws_series_inside_the_plot_area() {
        let mut cv = Canvas::new(300, 240);
        let chart = Chart {
            title: "T".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            x_range: (0.0, 1.0),
            y_range: (0.0, 1.0),
            series: vec![Series {
                label: "s".into(),
                color: PALETTE[3],
                points: vec![(0.0, 1.0), (1.0, 0.0)],
                markers: true,
            }],
            diagonal: true,
            legend: Corner::TopRight,
        };
        chart.draw(&mut cv, 0, 0, 300, 240);
        // The falling series crosses the centre of the plot area in red; the grey diagonal is drawn.
        let (cx, cy) = ((62 + 284) / 2, (34 + 196) / 2);
        let near = |c: Rgb| (cx - 3..=cx + 3).any(|x| (cy - 3..=cy + 3).any(|y| cv.get(x as usize, y as usize) == c));
        assert!(near(PALETTE[3]));
        let grey = (0..300).any(|x| (0..240).any(|y| cv.get(x, y) == REFERENCE));
        assert!(grey);
        assert_eq!(cv.get(0, 239), WHITE);
    }
}
