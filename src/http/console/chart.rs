//! Bar charts drawn on the server as SVG: no script, no CDN, readable without JavaScript.
//! Each bar has a tooltip (`<title>`) and may link to its run.

use maud::{Markup, html};

/// One bar: its value, its tooltip, and where a click leads.
pub struct Bar {
    pub value: i64,
    pub tip: String,
    pub href: Option<String>,
    /// A CSS class for bars that need to stand out (a failed run).
    pub class: Option<&'static str>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 120.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 18.0;

/// A bar chart of `bars` in order, left to right; `first` and `last` label the ends of the
/// time axis.
pub fn bars(title: &str, bars: &[Bar], first: &str, last: &str) -> Markup {
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1);
    let plot_w = WIDTH - LEFT;
    let plot_h = HEIGHT - BOTTOM;
    // Few bars stay narrow rather than filling the width.
    let step = (plot_w / bars.len().max(1) as f64).min(24.0);
    let gap = if step > 4.0 { 1.0 } else { 0.0 };
    html! {
        figure.chart {
            figcaption { (title) }
            svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(title) {
                line.axis x1=(LEFT) y1=(plot_h) x2=(WIDTH) y2=(plot_h) {}
                text.tick x=(LEFT - 4.0) y="10" text-anchor="end" { (max) }
                text.tick x=(LEFT - 4.0) y=(plot_h) text-anchor="end" { "0" }
                text.tick x=(LEFT) y=(HEIGHT - 4.0) text-anchor="start" { (first) }
                text.tick x=(WIDTH) y=(HEIGHT - 4.0) text-anchor="end" { (last) }
                @for (i, b) in bars.iter().enumerate() {
                    @let h = if b.value > 0 { (b.value as f64 / max as f64 * (plot_h - 2.0)).max(1.5) } else { 0.0 };
                    @let x = LEFT + i as f64 * step;
                    @let rect = html! {
                        rect class={ "bar " (b.class.unwrap_or("")) } x=(fmt(x)) y=(fmt(plot_h - h)) width=(fmt((step - gap).max(0.5))) height=(fmt(h)) {
                            title { (b.tip) }
                        }
                    };
                    @match &b.href {
                        Some(href) => a href=(href) { (rect) },
                        None => (rect),
                    }
                }
            }
        }
    }
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_and_escape_their_tips() {
        let b = |v, tip: &str| Bar { value: v, tip: tip.into(), href: Some("/console/runs/x".into()), class: None };
        let svg = bars("Errors", &[b(10, "<script>"), b(0, "none"), b(5, "half")], "a", "b").into_string();
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("height=\"100.0\""), "{svg}");
        assert!(svg.contains("height=\"0.0\""), "{svg}");
        assert!(svg.contains("&lt;script&gt;") && !svg.contains("<script>"), "{svg}");
        assert!(svg.contains(">10</text>"), "{svg}");
    }
}
