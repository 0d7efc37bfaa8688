#!/usr/bin/env python3
"""Plots the capped-link simulcast trace as an SVG.

Reads the CSV that tests/simulcast.rs writes (seconds, estimate_kbps, layer,
received_kbps, capped) and draws the bandwidth estimate and the received
video bitrate against the left axis, the received layer as a step line
against the right axis, and shades the time the link was capped.

Usage: benches/plot_simulcast.py CSV SVG
"""

import csv
import sys

WIDTH, HEIGHT = 900, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 70, 30, 50


def read(path):
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.append(
                {
                    "t": float(row["seconds"]),
                    "estimate": float(row["estimate_kbps"]) if row["estimate_kbps"] else None,
                    "layer": int(row["layer"]) if row["layer"] else None,
                    "received": float(row["received_kbps"]),
                    "capped": row.get("capped") == "1",
                }
            )
    return rows


def polyline(points, colour, width=2, dash=None):
    if len(points) < 2:
        return ""
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<polyline fill="none" stroke="{colour}" stroke-width="{width}"{dash_attr} points="{coords}"/>\n'


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    rows = read(sys.argv[1])
    if not rows:
        sys.exit("no samples in " + sys.argv[1])
    t_max = max(r["t"] for r in rows) or 1.0
    # The estimate overshoots while probing; cap the axis so the media stays readable.
    kbps_max = max(max(r["received"] for r in rows), 2000.0) * 1.25
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t):
        return LEFT + t / t_max * plot_w

    def y_kbps(v):
        return TOP + plot_h - min(v, kbps_max) / kbps_max * plot_h

    def y_layer(layer):
        return TOP + plot_h - (layer + 0.5) / 3.0 * plot_h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">\n']
    out.append(f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>\n')

    # Capped interval.
    capped = [r["t"] for r in rows if r["capped"]]
    if capped:
        x0, x1 = x(min(capped)), x(max(capped))
        out.append(f'<rect x="{x0:.1f}" y="{TOP}" width="{x1 - x0:.1f}" height="{plot_h}" fill="#fde2e2"/>\n')
        out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{TOP + 14}" text-anchor="middle" fill="#a33">link capped at 500 kbit/s</text>\n')

    # Axes and grid.
    out.append(f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" stroke="black"/>\n')
    out.append(f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="black"/>\n')
    out.append(f'<line x1="{LEFT + plot_w}" y1="{TOP}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" stroke="black"/>\n')
    step = 500 if kbps_max <= 4000 else 1000
    v = 0
    while v <= kbps_max:
        yy = y_kbps(v)
        out.append(f'<line x1="{LEFT}" y1="{yy:.1f}" x2="{LEFT + plot_w}" y2="{yy:.1f}" stroke="#eee"/>\n')
        out.append(f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end">{v}</text>\n')
        v += step
    for second in range(0, int(t_max) + 1, 2):
        xx = x(second)
        out.append(f'<text x="{xx:.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">{second}</text>\n')
    for layer, name in enumerate(["low", "mid", "top"]):
        out.append(f'<text x="{LEFT + plot_w + 6}" y="{y_layer(layer) + 4:.1f}">{name}</text>\n')
    out.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 10}" text-anchor="middle">seconds since the subscriber connected</text>\n')
    out.append(f'<text x="16" y="{TOP + plot_h / 2:.1f}" transform="rotate(-90 16 {TOP + plot_h / 2:.1f})" text-anchor="middle">kbit/s</text>\n')

    # Series.
    estimate = [(x(r["t"]), y_kbps(r["estimate"])) for r in rows if r["estimate"] is not None]
    received = [(x(r["t"]), y_kbps(r["received"])) for r in rows]
    layer_steps = []
    for r in rows:
        if r["layer"] is None:
            continue
        if layer_steps:
            layer_steps.append((x(r["t"]), layer_steps[-1][1]))
        layer_steps.append((x(r["t"]), y_layer(r["layer"])))
    out.append(polyline(estimate, "#1f77b4", dash="6 3"))
    out.append(polyline(received, "#2ca02c"))
    out.append(polyline(layer_steps, "#d62728", width=2.5))

    legend = [("#1f77b4", "bandwidth estimate (server)"), ("#2ca02c", "received video bitrate"), ("#d62728", "received layer (right axis)")]
    for i, (colour, label) in enumerate(legend):
        lx = LEFT + 10 + i * 260
        out.append(f'<line x1="{lx}" y1="{TOP - 12}" x2="{lx + 24}" y2="{TOP - 12}" stroke="{colour}" stroke-width="3"/>\n')
        out.append(f'<text x="{lx + 30}" y="{TOP - 8}">{label}</text>\n')
    out.append("</svg>\n")
    with open(sys.argv[2], "w") as f:
        f.write("".join(out))


if __name__ == "__main__":
    main()
