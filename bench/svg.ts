/** Small, dependency-free SVG charts for the benchmark reports. */
export interface Series {
  name: string;
  values: Array<number | null>;
}

const COLORS = ['#4e79a7', '#e15759', '#f28e2b', '#59a14f', '#76b7b2', '#b07aa1'];
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

const fmt = (v: number) => (Math.abs(v) >= 1000 ? `${+(v / 1000).toFixed(1)}k` : `${+v.toPrecision(3)}`);

/** Grouped bars (x groups, one bar per series) or lines; optional log y axis. */
export function chart(o: {
  title: string;
  yLabel: string;
  xLabels: string[];
  series: Series[];
  kind: 'bar' | 'line';
  log?: boolean;
}): string {
  const W = 720,
    H = 360,
    L = 70,
    R = 150,
    T = 40,
    B = 50;
  const pw = W - L - R,
    ph = H - T - B;
  const vals = o.series.flatMap((s) => s.values).filter((v): v is number => v !== null && Number.isFinite(v) && (!o.log || v > 0));
  let y: (v: number) => number;
  const ticks: number[] = [];
  if (o.log) {
    const lo = Math.floor(Math.log10(Math.min(...vals, 1)));
    const hi = Math.ceil(Math.log10(Math.max(...vals, 10)));
    y = (v) => T + ph - ((Math.log10(Math.max(v, 10 ** lo)) - lo) / (hi - lo || 1)) * ph;
    for (let e = lo; e <= hi; e++) ticks.push(10 ** e);
  } else {
    const max = niceMax(Math.max(...vals, 0));
    y = (v) => T + ph - (v / max) * ph;
    for (let i = 0; i <= 5; i++) ticks.push((max / 5) * i);
  }
  const gw = pw / o.xLabels.length;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${L}" y="22" font-size="15" font-weight="bold">${esc(o.title)}</text>`,
    `<text transform="translate(16 ${T + ph / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`,
  ];
  for (const tk of ticks) {
    out.push(
      `<line x1="${L}" x2="${L + pw}" y1="${y(tk).toFixed(1)}" y2="${y(tk).toFixed(1)}" stroke="#ddd"/>`,
      `<text x="${L - 6}" y="${(y(tk) + 4).toFixed(1)}" text-anchor="end">${fmt(tk)}</text>`,
    );
  }
  o.xLabels.forEach((xl, i) =>
    out.push(`<text x="${(L + gw * (i + 0.5)).toFixed(1)}" y="${T + ph + 18}" text-anchor="middle">${esc(xl)}</text>`),
  );
  out.push(
    `<line x1="${L}" x2="${L}" y1="${T}" y2="${T + ph}" stroke="#333"/>`,
    `<line x1="${L}" x2="${L + pw}" y1="${T + ph}" y2="${T + ph}" stroke="#333"/>`,
  );
  o.series.forEach((s, si) => {
    const c = COLORS[si % COLORS.length];
    if (o.kind === 'bar') {
      const bw = (gw * 0.8) / o.series.length;
      s.values.forEach((v, i) => {
        if (v === null || !Number.isFinite(v)) return;
        const x = L + gw * i + gw * 0.1 + bw * si;
        out.push(
          `<rect x="${x.toFixed(1)}" y="${y(v).toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${(T + ph - y(v)).toFixed(1)}" fill="${c}"><title>${esc(`${s.name} ${o.xLabels[i]}: ${v}`)}</title></rect>`,
        );
      });
    } else {
      const pts = s.values.map((v, i) =>
        v === null || !Number.isFinite(v) ? null : `${(L + gw * (i + 0.5)).toFixed(1)},${y(v).toFixed(1)}`,
      );
      const d = pts.filter(Boolean).join(' ');
      out.push(`<polyline points="${d}" fill="none" stroke="${c}" stroke-width="2"/>`);
      for (const p of pts) if (p) out.push(`<circle cx="${p.split(',')[0]}" cy="${p.split(',')[1]}" r="3.5" fill="${c}"/>`);
    }
    out.push(
      `<rect x="${L + pw + 14}" y="${T + si * 20}" width="12" height="12" fill="${c}"/>`,
      `<text x="${L + pw + 32}" y="${T + si * 20 + 10}">${esc(s.name)}</text>`,
    );
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
