//! The `--html` report: one self-contained page (inline CSS and SVG, no scripts,
//! nothing fetched) with the summary and three charts: the latency percentile
//! spectrum, latency over time and throughput over time.

use std::fmt::Write as _;

use super::Report;
use crate::metrics::Results;
use crate::slo::Micros;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 300.0;
const MARGIN: f64 = 56.0;
const COLORS: [&str; 6] = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

pub fn render(report: &Report, results: &Results) -> String {
    let mut page = String::new();
    let title = format!("loadtest · {}", report.scenario);
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font:14px system-ui,sans-serif;margin:2em auto;max-width:820px;color:#111}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}}\
         th:first-child,td:first-child{{text-align:left}}.met{{color:#16a34a}}.missed{{color:#dc2626;font-weight:bold}}\
         pre{{background:#f5f5f5;padding:1em;overflow:auto}}svg{{background:#fff;border:1px solid #eee}}</style></head><body>",
        escape(&title)
    );
    let _ = write!(page, "<h1>{}</h1><pre>{}</pre>", escape(&title), escape(&report.text()));

    // Percentile spectrum: x is -log10(1 - q), so 90%, 99%, 99.9% are evenly spaced.
    let quantiles = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999];
    let spectrum: Vec<Series> = results
        .latency
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| Series {
            name: name.clone(),
            points: quantiles.iter().map(|q| (-(1.0f64 - q).log10(), h.quantile_us(*q) as f64 / 1000.0)).collect(),
        })
        .collect();
    page.push_str("<h2>Latency by percentile</h2>");
    page.push_str(&chart(&spectrum, "percentile", "ms", |x| format!("{}%", trim(100.0 * (1.0 - 10f64.powf(-x))))));

    let over_time = vec![
        Series {
            name: "p50".into(),
            points: report.timeline.iter().map(|s| (s.second as f64, s.p50_us as f64 / 1000.0)).collect(),
        },
        Series {
            name: "p99".into(),
            points: report.timeline.iter().map(|s| (s.second as f64, s.p99_us as f64 / 1000.0)).collect(),
        },
        Series {
            name: "max".into(),
            points: report.timeline.iter().map(|s| (s.second as f64, s.max_us as f64 / 1000.0)).collect(),
        },
    ];
    let _ = write!(page, "<h2>{} latency over time</h2>", escape(&report.primary_latency));
    page.push_str(&chart(&over_time, "second", "ms", |x| format!("{x:.0}s")));

    let throughput = vec![
        Series {
            name: "sent/s".into(),
            points: report.timeline.iter().map(|s| (s.second as f64, s.sent as f64)).collect(),
        },
        Series {
            name: "delivered/s".into(),
            points: report.timeline.iter().map(|s| (s.second as f64, s.delivered as f64)).collect(),
        },
    ];
    page.push_str("<h2>Throughput over time</h2>");
    page.push_str(&chart(&throughput, "second", "per second", |x| format!("{x:.0}s")));

    page.push_str("<h2>Latency table</h2><table><tr><th>latency</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>");
    for (name, l) in &report.latency {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            l.count,
            Micros(l.p50_us as f64),
            Micros(l.p90_us as f64),
            Micros(l.p99_us as f64),
            Micros(l.p999_us as f64),
            Micros(l.max_us as f64)
        );
    }
    page.push_str("</table>");
    if !report.slo.is_empty() {
        page.push_str("<h2>Objectives</h2><table><tr><th>objective</th><th>actual</th><th>verdict</th></tr>");
        for v in &report.slo {
            let (class, word) = if v.met { ("met", "met") } else { ("missed", "MISSED") };
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{word}</td></tr>",
                escape(&v.objective),
                escape(&v.actual)
            );
        }
        page.push_str("</table>");
    }
    page.push_str("</body></html>\n");
    page
}

/// A line chart as inline SVG, y from 0 to the largest value.
fn chart(series: &[Series], x_label: &str, y_label: &str, x_tick: impl Fn(f64) -> String) -> String {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for (x, y) in all {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y1 = y1.max(*y);
    }
    if x0 > x1 {
        return "<p>No data.</p>".into();
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.1 };
    let (plot_w, plot_h) = (WIDTH - 2.0 * MARGIN, HEIGHT - 2.0 * MARGIN);
    let px = |x: f64| MARGIN + (x - x0) / (x1 - x0) * plot_w;
    let py = |y: f64| HEIGHT - MARGIN - y / y1 * plot_h;
    let mut svg =
        format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" font-size=\"11\">");
    for i in 0..=4 {
        let y = y1 * i as f64 / 4.0;
        let (right, yy, label_x, label_y) = (WIDTH - MARGIN, py(y), MARGIN - 6.0, py(y) + 4.0);
        let _ = write!(
            svg,
            "<line x1=\"{MARGIN}\" x2=\"{right}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#eee\"/>\
             <text x=\"{label_x}\" y=\"{label_y:.1}\" text-anchor=\"end\">{}</text>",
            trim(y)
        );
    }
    for i in 0..=5 {
        let x = x0 + (x1 - x0) * i as f64 / 5.0;
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            px(x),
            HEIGHT - MARGIN + 16.0,
            escape(&x_tick(x))
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text><text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">{}</text>",
        WIDTH / 2.0,
        HEIGHT - 12.0,
        escape(x_label),
        HEIGHT / 2.0,
        HEIGHT / 2.0,
        escape(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = s.points.iter().map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/><text x=\"{}\" y=\"{}\" fill=\"{color}\">{}</text>",
            points.join(" "),
            MARGIN + 10.0 + 110.0 * i as f64,
            MARGIN - 12.0,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn trim(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::{Counter, Metrics};

    #[test]
    fn the_page_is_self_contained_and_has_three_charts() {
        let m = Metrics::new("signal");
        m.start_timeline();
        m.record("signal", Duration::from_micros(700));
        m.add(Counter::Sent, 1);
        m.tick();
        let r = m.snapshot("relay", Duration::from_secs(1), Some(1.0));
        let page = render(&Report::new(&r, vec![], None), &r);
        assert_eq!(page.matches("<svg").count(), 3);
        assert!(!page.contains("<script") && !page.contains("http://") || page.contains("http://www.w3.org/2000/svg"));
        assert!(!page.contains("src=\""), "nothing is fetched");
        assert!(page.contains("Latency by percentile"));
    }
}
