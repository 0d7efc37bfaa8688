//! Plot of a run over time as a standalone SVG: received video frames per
//! second (left axis) and connected subscribers (right axis).

use std::fmt::Write as _;

use super::report::TimelinePoint;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 70.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const FRAMES_COLOR: &str = "#1f77b4";
const SUBSCRIBERS_COLOR: &str = "#d62728";

/// Renders the timeline as an SVG document.
pub fn render_timeline(title: &str, timeline: &[TimelinePoint]) -> String {
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let max_t = timeline.iter().map(|point| point.t_s).fold(1.0, f64::max);
    let max_frames = nice_ceiling(timeline.iter().map(|point| point.video_frames_per_s).fold(0.0, f64::max));
    let max_subscribers = nice_ceiling(
        timeline
            .iter()
            .map(|point| point.subscribers_connected as f64)
            .fold(0.0, f64::max),
    );
    let x = |t: f64| LEFT + t / max_t * plot_width;
    let y = |value: f64, max: f64| TOP + plot_height - value / max * plot_height;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );

    // Axes and grid with five steps on each axis.
    let _ = writeln!(
        svg,
        r#"<rect x="{LEFT}" y="{TOP}" width="{plot_width}" height="{plot_height}" fill="none" stroke="black"/>"#
    );
    for step in 0..=5 {
        let fraction = f64::from(step) / 5.0;
        let grid_y = TOP + plot_height - fraction * plot_height;
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{grid_y}" x2="{}" y2="{grid_y}" stroke="#ddd"/>"##,
            LEFT + plot_width
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end" fill="{FRAMES_COLOR}">{}</text>"#,
            LEFT - 6.0,
            grid_y + 4.0,
            label(fraction * max_frames)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" fill="{SUBSCRIBERS_COLOR}">{}</text>"#,
            LEFT + plot_width + 6.0,
            grid_y + 4.0,
            label(fraction * max_subscribers)
        );
        let grid_x = LEFT + fraction * plot_width;
        let _ = writeln!(
            svg,
            r#"<text x="{grid_x}" y="{}" text-anchor="middle">{}</text>"#,
            TOP + plot_height + 16.0,
            label(fraction * max_t)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">seconds since start</text>"#,
        LEFT + plot_width / 2.0,
        HEIGHT - 12.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="14" y="{0}" transform="rotate(-90 14 {0})" text-anchor="middle" fill="{FRAMES_COLOR}">video frames received per second</text>"#,
        TOP + plot_height / 2.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="{0}" y="{1}" transform="rotate(90 {0} {1})" text-anchor="middle" fill="{SUBSCRIBERS_COLOR}">subscribers connected</text>"#,
        WIDTH - 14.0,
        TOP + plot_height / 2.0
    );

    let frames: Vec<(f64, f64)> = timeline
        .iter()
        .map(|point| (x(point.t_s), y(point.video_frames_per_s, max_frames)))
        .collect();
    let subscribers: Vec<(f64, f64)> = timeline
        .iter()
        .map(|point| (x(point.t_s), y(point.subscribers_connected as f64, max_subscribers)))
        .collect();
    polyline(&mut svg, &frames, FRAMES_COLOR);
    polyline(&mut svg, &subscribers, SUBSCRIBERS_COLOR);
    let _ = writeln!(svg, "</svg>");
    svg
}

fn polyline(svg: &mut String, points: &[(f64, f64)], color: &str) {
    let mut coordinates = String::new();
    for (x, y) in points {
        let _ = write!(coordinates, "{x:.1},{y:.1} ");
    }
    let _ = writeln!(
        svg,
        r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
        coordinates.trim_end()
    );
}

/// Rounds `value` up to 1, 2 or 5 times a power of ten, at least 1.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 1.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|factor| factor * magnitude)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * magnitude)
}

fn label(value: f64) -> String {
    if value.fract().abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceiling_rounds_up() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(30.0), 50.0);
        assert_eq!(nice_ceiling(51.0), 100.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
    }

    #[test]
    fn timeline_renders_both_series() {
        let timeline: Vec<TimelinePoint> = (1..=4)
            .map(|second| TimelinePoint {
                t_s: f64::from(second),
                subscribers_connected: 2,
                video_frames_per_s: 60.0,
                ..TimelinePoint::default()
            })
            .collect();
        let svg = render_timeline("smoke <1 room>", &timeline);
        assert!(svg.starts_with("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("smoke &lt;1 room&gt;"));
        // 60 frames/s on a 0..100 axis sits 60% up the 310 px plot.
        assert!(svg.contains(&format!("{:.1},{:.1}", LEFT + 0.25 * 660.0, TOP + 310.0 - 0.6 * 310.0)), "{svg}");
    }
}
