import { TachyonError } from './errors.js';

const RATE_RE = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:bit|bps|b)?(?:\/s)?$/i;
const MULT: Record<string, number> = { '': 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12 };

/** Parses a rate such as `200m`, `1g`, `500k` or `1500000` into bits per second. */
export function parseRate(text: string): number {
  const m = RATE_RE.exec(text.trim());
  if (!m) {
    throw new TachyonError('USAGE', `invalid rate '${text}': write it like 200m, 1g or 500k (bits per second)`);
  }
  const value = Number(m[1]) * (MULT[(m[2] ?? '').toLowerCase()] ?? 1);
  if (!Number.isFinite(value) || value <= 0 || value > 1e12) {
    throw new TachyonError('USAGE', `invalid rate '${text}': must be between 1 bit/s and 1 Tbit/s`);
  }
  return Math.round(value);
}

export function formatRate(bitsPerSecond: number): string {
  if (bitsPerSecond >= 1e9) return `${(bitsPerSecond / 1e9).toFixed(2)} Gbit/s`;
  if (bitsPerSecond >= 1e6) return `${(bitsPerSecond / 1e6).toFixed(1)} Mbit/s`;
  if (bitsPerSecond >= 1e3) return `${(bitsPerSecond / 1e3).toFixed(1)} kbit/s`;
  return `${bitsPerSecond.toFixed(0)} bit/s`;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}
