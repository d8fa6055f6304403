/**
 * Line charts as SVG text, without a plotting dependency: a grid of panels sharing one x axis
 * (time), each panel with its own y axis, one line per series, tick labels on both axes, a
 * legend, optional dashed trend segments and a shaded span (e.g. the warm-up left out of a fit).
 *
 *   svgChart({ title, subtitle: ["line", …], xLabel: "minutes", columns: 2, shade: { from: 0, to: 2, label: "warm-up" },
 *     panels: [{ title: "RSS", unit: "MiB", series: [{ name: "gateway 0", points: [[x, y], …] }],
 *                trends: [{ series: 0, from: [x, y], to: [x, y] }] }] })
 */

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];
const PANEL_W = 460;
const PANEL_H = 250;
const PAD = { left: 62, right: 16, top: 30, bottom: 36 };

const esc = (s) => String(s).replace(/&/gu, "&amp;").replace(/</gu, "&lt;").replace(/>/gu, "&gt;").replace(/"/gu, "&quot;");
const num = (v) => Math.round(v * 10) / 10;

/** About `count` round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]. */
export function niceTicks(lo, hi, count = 5) {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [0, 1];
  if (hi === lo) {
    const d = Math.abs(hi) || 1;
    lo -= d / 2;
    hi += d / 2;
  }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const ticks = [];
  for (let v = Math.floor(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Math.round(v / step) * step);
  if (ticks.at(-1) < hi) ticks.push(ticks.at(-1) + step);
  return ticks;
}

function label(v) {
  const a = Math.abs(v);
  if (a >= 1e6) return `${num(v / 1e6)}M`;
  if (a >= 1e4) return `${num(v / 1e3)}k`;
  return String(Number(v.toPrecision(6)));
}

function panel(p, x0, y0, xTicks, shade) {
  const w = PANEL_W - PAD.left - PAD.right;
  const h = PANEL_H - PAD.top - PAD.bottom;
  const ys = p.series.flatMap((s) => s.points.map(([, y]) => y)).filter(Number.isFinite);
  const yTicks = niceTicks(Math.min(p.zero === false ? Infinity : 0, ...ys), Math.max(...ys, 0), 4);
  const [xlo, xhi] = [xTicks[0], xTicks.at(-1)];
  const [ylo, yhi] = [yTicks[0], yTicks.at(-1)];
  const sx = (x) => x0 + PAD.left + ((x - xlo) / (xhi - xlo || 1)) * w;
  const sy = (y) => y0 + PAD.top + h - ((y - ylo) / (yhi - ylo || 1)) * h;
  const out = [];
  out.push(`<g>`);
  out.push(`<text x="${x0 + PAD.left}" y="${y0 + 18}" font-size="13" font-weight="bold">${esc(p.title)}${p.unit ? ` (${esc(p.unit)})` : ""}</text>`);
  if (shade) {
    out.push(
      `<rect x="${num(sx(shade.from))}" y="${y0 + PAD.top}" width="${num(sx(shade.to) - sx(shade.from))}" height="${h}" fill="#000" fill-opacity="0.05"/>`,
      `<text x="${num(sx(shade.from) + 4)}" y="${y0 + PAD.top + 12}" font-size="10" fill="#777">${esc(shade.label ?? "")}</text>`,
    );
  }
  for (const t of yTicks) {
    const y = num(sy(t));
    out.push(`<line x1="${x0 + PAD.left}" x2="${x0 + PAD.left + w}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${x0 + PAD.left - 6}" y="${y + 4}" font-size="10" text-anchor="end">${esc(label(t))}</text>`);
  }
  for (const t of xTicks) {
    const x = num(sx(t));
    out.push(`<line x1="${x}" x2="${x}" y1="${y0 + PAD.top}" y2="${y0 + PAD.top + h}" stroke="#f0f0f0"/>`);
    out.push(`<text x="${x}" y="${y0 + PAD.top + h + 14}" font-size="10" text-anchor="middle">${esc(label(t))}</text>`);
  }
  out.push(`<rect x="${x0 + PAD.left}" y="${y0 + PAD.top}" width="${w}" height="${h}" fill="none" stroke="#999"/>`);
  out.push(`<text x="${x0 + PAD.left + w / 2}" y="${y0 + PANEL_H - 8}" font-size="11" text-anchor="middle">${esc(p.xLabel)}</text>`);
  p.series.forEach((s, i) => {
    const pts = s.points.filter(([, y]) => Number.isFinite(y)).map(([x, y]) => `${num(sx(x))},${num(sy(y))}`);
    if (pts.length) out.push(`<polyline fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="1.5" points="${pts.join(" ")}"/>`);
    // Legend on the title line, right-aligned.
    const lx = x0 + PANEL_W - PAD.right - (p.series.length - i) * 80;
    out.push(`<line x1="${lx}" x2="${lx + 16}" y1="${y0 + 14}" y2="${y0 + 14}" stroke="${COLORS[i % COLORS.length]}" stroke-width="2"/>`);
    out.push(`<text x="${lx + 20}" y="${y0 + 18}" font-size="10">${esc(s.name)}</text>`);
  });
  for (const t of p.trends ?? []) {
    const c = COLORS[t.series % COLORS.length];
    out.push(
      `<line x1="${num(sx(t.from[0]))}" y1="${num(sy(t.from[1]))}" x2="${num(sx(t.to[0]))}" y2="${num(sy(t.to[1]))}" stroke="${c}" stroke-width="1" stroke-dasharray="5,3"/>`,
    );
  }
  out.push(`</g>`);
  return out.join("\n");
}

/** The whole chart as an SVG document (a string). */
export function svgChart({ title, subtitle, xLabel = "", panels, columns = 2, shade }) {
  const xs = panels.flatMap((p) => p.series.flatMap((s) => s.points.map(([x]) => x)));
  const xTicks = niceTicks(Math.min(0, ...xs), Math.max(...xs, 1), 6);
  const rows = Math.ceil(panels.length / columns);
  const lines = subtitle === undefined ? [] : [subtitle].flat();
  const top = 36 + 15 * lines.length;
  const W = columns * PANEL_W;
  const H = top + rows * PANEL_H;
  const body = panels.map((p, i) => panel({ xLabel, ...p }, (i % columns) * PANEL_W, top + Math.floor(i / columns) * PANEL_H, xTicks, shade));
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${W / 2}" y="22" font-size="15" font-weight="bold" text-anchor="middle">${esc(title)}</text>`,
    ...lines.map((l, i) => `<text x="${W / 2}" y="${40 + 15 * i}" font-size="11" text-anchor="middle" fill="#555">${esc(l)}</text>`),
    ...body,
    `</svg>`,
    "",
  ].join("\n");
}
