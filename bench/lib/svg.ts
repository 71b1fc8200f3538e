// A hand-made horizontal bar chart in SVG: one panel per scenario, each with its own
// scale, bars labelled with their value, optional target marker. No chart library.

export interface Bar {
  label: string;
  /** Undefined: no figure (the run failed); `missing` says why. */
  value: number | undefined;
  color: string;
  /** Printed after the value, e.g. "timed out". */
  suffix?: string;
  missing?: string;
}

export type Target =
  | { kind: 'line'; value: number; label: string }
  | { kind: 'band'; low: number; high: number; label: string };

export interface Panel {
  title: string;
  unit: string;
  bars: Bar[];
  target?: Target;
  /** Value printed with this many decimals; default chooses by magnitude. */
  decimals?: number;
}

export interface ChartOptions {
  title: string;
  subtitle?: string;
  width?: number;
}

/** White outline under value labels, so a target line behind them stays readable. */
const HALO = 'stroke="#fff" stroke-width="3" paint-order="stroke"';
const FONT = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif";

export function escapeXml(s: string): string {
  return s
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

/** Smallest "nice" number (1, 2, 2.5, 5 × 10^k) at or above v. */
export function niceCeil(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v * (1 - 1e-9)) return m * p;
  return 10 * p;
}

export function formatValue(v: number, decimals?: number): string {
  if (decimals !== undefined) return v.toFixed(decimals);
  const a = Math.abs(v);
  return v.toFixed(a >= 100 ? 0 : a >= 10 ? 1 : 2);
}

const r1 = (x: number): string => (Math.round(x * 10) / 10).toString();

export function renderChart(panels: readonly Panel[], opt: ChartOptions): string {
  const width = opt.width ?? 820;
  const labelW = 200;
  const x0 = labelW + 10;
  const x1 = width - 130; // room for the value text
  const barH = 18;
  const gap = 6;
  const parts: string[] = [];
  let y = 28;
  parts.push(
    `<text x="16" y="${y}" font-size="16" font-weight="600">${escapeXml(opt.title)}</text>`,
  );
  if (opt.subtitle) {
    y += 18;
    parts.push(`<text x="16" y="${y}" font-size="12" fill="#555">${escapeXml(opt.subtitle)}</text>`);
  }
  y += 14;

  for (const panel of panels) {
    y += 22;
    parts.push(
      `<text x="16" y="${y}" font-size="13" font-weight="600">${escapeXml(panel.title)}</text>`,
    );
    y += panel.target ? 24 : 10; // a target gets a row for its label
    const values = panel.bars.map((b) => b.value).filter((v): v is number => v !== undefined && Number.isFinite(v));
    const t = panel.target;
    const tmax = t ? (t.kind === 'line' ? t.value : t.high) : 0;
    const max = niceCeil(Math.max(1e-9, tmax, ...values) * 1.02);
    const sx = (v: number): number => x0 + (Math.max(0, v) / max) * (x1 - x0);
    const top = y;
    const bottom = y + panel.bars.length * (barH + gap);

    // grid: 0, 1/2, 1 of the scale
    for (const f of [0, 0.5, 1]) {
      const gx = r1(sx(max * f));
      parts.push(
        `<line x1="${gx}" y1="${top}" x2="${gx}" y2="${bottom}" stroke="#ddd" stroke-width="1"/>`,
        `<text x="${gx}" y="${bottom + 12}" font-size="10" fill="#777" text-anchor="middle">${escapeXml(
          String(Number((max * f).toPrecision(3))),
        )}${f === 1 ? ` ${escapeXml(panel.unit)}` : ''}</text>`,
      );
    }
    if (t?.kind === 'band') {
      parts.push(
        `<rect x="${r1(sx(t.low))}" y="${top - 2}" width="${r1(Math.max(1, sx(t.high) - sx(t.low)))}" height="${
          bottom - top + 2
        }" fill="#16a34a" fill-opacity="0.15"/>`,
      );
    }

    if (t) {
      const tx = r1(sx(t.kind === 'line' ? t.value : (t.low + t.high) / 2));
      if (t.kind === 'line') {
        parts.push(
          `<line x1="${tx}" y1="${top - 4}" x2="${tx}" y2="${bottom}" stroke="#dc2626" stroke-width="1.5" stroke-dasharray="4 3"/>`,
        );
      }
      parts.push(
        `<text x="${tx}" y="${top - 6}" font-size="10" fill="#dc2626" text-anchor="middle">${escapeXml(t.label)}</text>`,
      );
    }
    panel.bars.forEach((bar, i) => {
      const by = top + i * (barH + gap);
      parts.push(
        `<text x="${labelW}" y="${by + barH - 5}" font-size="12" text-anchor="end">${escapeXml(bar.label)}</text>`,
      );
      if (bar.value === undefined || !Number.isFinite(bar.value)) {
        parts.push(
          `<text x="${x0 + 4}" y="${by + barH - 5}" font-size="12" fill="#b91c1c">${escapeXml(
            bar.missing ?? 'no result',
          )}</text>`,
        );
        return;
      }
      const w = Math.max(1, sx(bar.value) - x0);
      parts.push(
        `<rect x="${x0}" y="${by}" width="${r1(w)}" height="${barH}" fill="${bar.color}" rx="2"/>`,
        `<text x="${r1(x0 + w + 5)}" y="${by + barH - 5}" font-size="12" ${HALO}>${escapeXml(
          `${formatValue(bar.value, panel.decimals)} ${panel.unit}${bar.suffix ? ` ${bar.suffix}` : ''}`,
        )}</text>`,
      );
    });

    y = bottom + 16;
  }
  const height = y + 12;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${escapeXml(FONT)}">`,
    `<title>${escapeXml(opt.title)}</title>`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}
