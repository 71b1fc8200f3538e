/**
 * Erasure code for the tail of a transfer (docs/protocol.md, "Tail parity"): a
 * systematic Reed–Solomon code over GF(2^8) with a Cauchy generator matrix.
 *
 * A group is k data blocks (k ≤ MAX_GROUP) and m parity blocks (m ≤ MAX_PARITY), all
 * padded with zeros to one length. Parity j is the sum over i of C[j][i]·data[i] with
 * C[j][i] = 1 / (x_j + y_i), x_j = j and y_i = 128 + i. Every square submatrix of a
 * Cauchy matrix is invertible, so any k of the k + m blocks give back the other data
 * blocks, whatever k and m a group uses: the coefficients do not depend on them.
 */

import { native } from '../native/binding.js';

export const MAX_GROUP = 128;
export const MAX_PARITY = 128;

// GF(2^8) with the polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d), generator 2
const EXP = new Uint8Array(512);
const LOG = new Uint8Array(256);
{
  let x = 1;
  for (let i = 0; i < 255; i++) {
    EXP[i] = x;
    LOG[x] = i;
    x <<= 1;
    if (x & 0x100) x ^= 0x11d;
  }
  for (let i = 255; i < 512; i++) EXP[i] = EXP[i - 255]!;
}

export function gfMul(a: number, b: number): number {
  return a === 0 || b === 0 ? 0 : EXP[LOG[a]! + LOG[b]!]!;
}

export function gfInv(a: number): number {
  if (a === 0) throw new RangeError('0 has no inverse');
  return EXP[255 - LOG[a]!]!;
}

/** MUL[c] maps a byte b to c·b (256 tables of 256 bytes, built once). */
const MUL: Uint8Array[] = [];
for (let c = 0; c < 256; c++) {
  const t = new Uint8Array(256);
  for (let b = 0; b < 256; b++) t[b] = gfMul(c, b);
  MUL.push(t);
}

/** The generator coefficient of data block i in parity j. */
export function coefficient(j: number, i: number): number {
  return gfInv(j ^ (128 + i));
}

/** dst[0, src.length) ^= c·src */
export function mulAdd(dst: Uint8Array, src: Uint8Array, c: number): void {
  if (native) native.fecMulAdd(dst, src, c);
  else mulAddTs(dst, src, c);
}

/** mulAdd in TypeScript (the reference the addon is tested against) */
export function mulAddTs(dst: Uint8Array, src: Uint8Array, c: number): void {
  const n = src.length;
  if (c === 0) return;
  if (c === 1) {
    for (let i = 0; i < n; i++) dst[i]! ^= src[i]!;
    return;
  }
  const t = MUL[c]!;
  for (let i = 0; i < n; i++) dst[i]! ^= t[src[i]!]!;
}

/**
 * Accumulates the m parity blocks of one group as its data blocks go by, so that no
 * data block has to be kept: add(i, block) once for each of the k blocks, in any order.
 */
export class ParityEncoder {
  /** the m parity symbols, views of one buffer */
  readonly parity: Buffer[];
  private readonly all: Buffer;

  constructor(
    readonly k: number,
    readonly m: number,
    readonly len: number,
  ) {
    if (!Number.isInteger(k) || k < 1 || k > MAX_GROUP) throw new RangeError(`group of ${k} blocks`);
    if (!Number.isInteger(m) || m < 1 || m > MAX_PARITY) throw new RangeError(`${m} parity blocks`);
    this.all = Buffer.alloc(m * len);
    this.parity = Array.from({ length: m }, (_, j) => this.all.subarray(j * len, (j + 1) * len));
  }

  add(i: number, block: Uint8Array): void {
    if (i < 0 || i >= this.k) throw new RangeError(`block ${i} of a group of ${this.k}`);
    if (block.length > this.len) throw new RangeError(`block of ${block.length} bytes, symbols of ${this.len}`);
    if (native) native.fecAdd(this.all, this.m, this.len, block, i);
    else for (let j = 0; j < this.m; j++) mulAddTs(this.parity[j]!, block, coefficient(j, i));
  }
}

/**
 * The missing data blocks of a group, from what arrived: `data[i]` for the data blocks
 * that arrived (shorter ones count as zero-padded), `parity` by parity index. Returns
 * the recovered blocks (length `len`, by data index), or undefined when fewer than k
 * blocks arrived in all.
 */
export function recover(
  k: number,
  len: number,
  data: ReadonlyMap<number, Uint8Array>,
  parity: ReadonlyMap<number, Uint8Array>,
): Map<number, Buffer> | undefined {
  const missing: number[] = [];
  for (let i = 0; i < k; i++) if (!data.has(i)) missing.push(i);
  const out = new Map<number, Buffer>();
  const e = missing.length;
  if (e === 0) return out;
  if (parity.size < e) return undefined;
  const rows = [...parity.keys()].sort((a, b) => a - b).slice(0, e);
  // syndromes: parity_j minus the known blocks' contributions
  const s = rows.map((j) => {
    const p = parity.get(j)!;
    const acc = Buffer.alloc(len);
    acc.set(p.subarray(0, len));
    for (const [i, block] of data) if (i < k) mulAdd(acc, block.subarray(0, len), coefficient(j, i));
    return acc;
  });
  // invert the e×e Cauchy submatrix M[r][c] = coefficient(rows[r], missing[c])
  const inv = invert(rows.map((j) => missing.map((i) => coefficient(j, i))));
  for (let c = 0; c < e; c++) {
    const block = Buffer.alloc(len);
    for (let r = 0; r < e; r++) mulAdd(block, s[r]!, inv[c]![r]!);
    out.set(missing[c]!, block);
  }
  return out;
}

/** Gauss–Jordan inversion over GF(2^8); the matrix must be invertible (Cauchy submatrices are). */
function invert(a: number[][]): number[][] {
  const n = a.length;
  const m = a.map((row, r) => [...row, ...Array.from({ length: n }, (_, c) => (c === r ? 1 : 0))]);
  for (let col = 0; col < n; col++) {
    let pivot = col;
    while (pivot < n && m[pivot]![col] === 0) pivot++;
    if (pivot === n) throw new Error('singular matrix');
    [m[col], m[pivot]] = [m[pivot]!, m[col]!];
    const row = m[col]!;
    const f = gfInv(row[col]!);
    for (let c = 0; c < 2 * n; c++) row[c] = gfMul(row[c]!, f);
    for (let r = 0; r < n; r++) {
      if (r === col) continue;
      const g = m[r]![col]!;
      if (g === 0) continue;
      const other = m[r]!;
      for (let c = 0; c < 2 * n; c++) other[c]! ^= gfMul(g, row[c]!);
    }
  }
  return m.map((row) => row.slice(n));
}

/**
 * The fewest parity blocks for a group of k such that, with independent losses at rate
 * p, the group fails to decode (more than m of its k + m blocks lost) with probability
 * at most `failure`. 0 when p is 0; at most MAX_PARITY.
 */
export function parityFor(k: number, p: number, failure: number): number {
  if (!(p > 0)) return 0;
  const q = Math.min(p, 0.5);
  const r = q / (1 - q);
  for (let m = 1; m <= MAX_PARITY; m++) {
    const n = k + m;
    // P(X <= m) for X ~ Binomial(n, q), term by term
    let pmf = Math.pow(1 - q, n);
    let cdf = pmf;
    for (let x = 0; x < m; x++) {
      pmf *= ((n - x) / (x + 1)) * r;
      cdf += pmf;
    }
    if (1 - cdf <= failure) return m;
  }
  return MAX_PARITY;
}
