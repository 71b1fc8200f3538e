/**
 * Source addresses as the defender sees them: normalization (IPv4-mapped IPv6 becomes
 * IPv4; an IPv6 address is scored as its /64, since one host usually holds a whole /64),
 * and CIDR lists (allow-lists, the safe list) with a parser that says what is wrong.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { TachyonError } from '../core/errors.js';

/** A parsed IP address: family and its bits as a bigint (32 or 128 bits). */
export interface ParsedIp {
  readonly family: 4 | 6;
  readonly bits: bigint;
}

const MAPPED = /^::ffff:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/i;

function ipv4Bits(text: string): bigint {
  let v = 0n;
  for (const part of text.split('.')) v = (v << 8n) | BigInt(Number(part));
  return v;
}

/** The 128 bits of a valid IPv6 text (as `isIPv6` accepts it, without a zone). */
function ipv6Bits(text: string): bigint {
  let s = text;
  // a trailing dotted IPv4 part counts as two groups
  const dotted = /(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/.exec(s);
  if (dotted) {
    const v4 = ipv4Bits(dotted[1]!);
    s = `${s.slice(0, dotted.index)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const [head, tail] = s.includes('::') ? (s.split('::') as [string, string]) : [s, undefined];
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  let v = 0n;
  for (const g of groups) v = (v << 16n) | BigInt(parseInt(g, 16));
  return v;
}

/** Parses an IP address (IPv4, IPv6, IPv4-mapped IPv6 → IPv4); undefined if it is not one. */
export function parseIp(text: string): ParsedIp | undefined {
  if (typeof text !== 'string' || text.length > 64) return undefined;
  const m = MAPPED.exec(text);
  if (m && isIPv4(m[1]!)) return { family: 4, bits: ipv4Bits(m[1]!) };
  if (isIPv4(text)) return { family: 4, bits: ipv4Bits(text) };
  if (isIPv6(text) && !text.includes('%')) {
    const bits = ipv6Bits(text);
    if (bits >> 32n === 0xffffn) return { family: 4, bits: bits & 0xffffffffn };
    return { family: 6, bits };
  }
  return undefined;
}

function formatV4(bits: bigint): string {
  return [24n, 16n, 8n, 0n].map((s) => String((bits >> s) & 0xffn)).join('.');
}

/**
 * The key an address is scored and blocked under: the IPv4 address itself (a mapped one
 * unwrapped), or for IPv6 its /64 as `xxxx:xxxx:xxxx:xxxx::/64`. Text that is not an IP
 * address is returned clipped and lower-cased (so that it is still counted, never thrown).
 */
export function addressKey(address: string): string {
  if (isIPv4(address)) return address; // the common case, without bigint work (isIPv4 admits only canonical dotted quads)
  const p = parseIp(address);
  if (p === undefined) return String(address).slice(0, 64).toLowerCase();
  if (p.family === 4) return formatV4(p.bits);
  const top = p.bits >> 64n;
  const groups = [48n, 32n, 16n, 0n].map((s) => ((top >> s) & 0xffffn).toString(16));
  return `${groups.join(':')}::/64`;
}

/** One CIDR block. */
export interface Cidr {
  readonly family: 4 | 6;
  /** Network bits (host bits zero). */
  readonly network: bigint;
  readonly prefix: number;
  /** As written, normalized (`10.0.0.0/8`). */
  readonly text: string;
}

function cidrError(text: string, why: string, where?: string): TachyonError {
  const shown = JSON.stringify(String(text).slice(0, 80));
  return new TachyonError('CONFIG', `${where ? `${where}: ` : ''}invalid address block ${shown}: ${why}`, {
    publicMessage: `Invalid address block: ${why}.`,
    details: { reason: 'cidr', why },
  });
}

/**
 * Parses `ADDRESS` or `ADDRESS/PREFIX` (IPv4 prefix 0–32, IPv6 0–128; an IPv4-mapped IPv6
 * block with prefix ≥ 96 becomes IPv4). Host bits must be zero (`10.0.0.1/8` is refused:
 * it is usually a mistake).
 * @throws TachyonError `CONFIG` naming what is wrong (`where` prefixes the message).
 */
export function parseCidr(text: string, where?: string): Cidr {
  if (typeof text !== 'string') throw cidrError(String(text), 'expected a string', where);
  const s = text.trim();
  if (s === '') throw cidrError(text, 'empty', where);
  if (s.length > 64) throw cidrError(text, 'too long', where);
  const slash = s.indexOf('/');
  const addr = slash < 0 ? s : s.slice(0, slash);
  const prefixText = slash < 0 ? undefined : s.slice(slash + 1);
  let family: 4 | 6;
  let bits: bigint;
  let max: number;
  const m = MAPPED.exec(addr);
  if (isIPv4(addr)) {
    family = 4;
    bits = ipv4Bits(addr);
    max = 32;
  } else if (isIPv6(addr) && !addr.includes('%')) {
    family = 6;
    bits = ipv6Bits(addr);
    max = 128;
  } else if (m) {
    throw cidrError(text, 'not an IP address', where);
  } else {
    throw cidrError(text, addr.includes('%') ? 'zone ids are not allowed' : 'not an IP address', where);
  }
  let prefix = max;
  if (prefixText !== undefined) {
    if (!/^\d{1,3}$/.test(prefixText)) throw cidrError(text, `the prefix length must be a number from 0 to ${max}`, where);
    prefix = Number(prefixText);
    if (prefix > max) throw cidrError(text, `the prefix length must be a number from 0 to ${max}`, where);
  }
  const hostBits = BigInt(max - prefix);
  const mask = hostBits === 0n ? 0n : (1n << hostBits) - 1n;
  if ((bits & mask) !== 0n) throw cidrError(text, `host bits are set (did you mean ${formatCidr(family, bits & ~mask, prefix)}?)`, where);
  if (family === 6 && prefix >= 96 && bits >> 32n === 0xffffn) {
    return { family: 4, network: bits & 0xffffffffn, prefix: prefix - 96, text: formatCidr(4, bits & 0xffffffffn, prefix - 96) };
  }
  return { family, network: bits, prefix, text: formatCidr(family, bits, prefix) };
}

function formatCidr(family: 4 | 6, network: bigint, prefix: number): string {
  if (family === 4) return `${formatV4(network)}/${prefix}`;
  const groups: string[] = [];
  for (let s = 112n; s >= 0n; s -= 16n) groups.push(((network >> s) & 0xffffn).toString(16));
  return `${groups.join(':').replace(/(^|:)0(:0)+(:|$)/, '::')}/${prefix}`;
}

/** Whether a parsed address lies in a block. */
export function cidrContains(c: Cidr, ip: ParsedIp): boolean {
  if (c.family !== ip.family) return false;
  const max = c.family === 4 ? 32n : 128n;
  const shift = max - BigInt(c.prefix);
  return ip.bits >> shift === c.network >> shift;
}

/** An immutable list of CIDR blocks. */
export class CidrList {
  readonly blocks: readonly Cidr[];

  constructor(blocks: readonly Cidr[]) {
    this.blocks = Object.freeze([...blocks]);
  }

  /** Parses every entry; the error names the first bad one as `where[i]`. */
  static parse(texts: readonly string[], where = 'list'): CidrList {
    return new CidrList(texts.map((t, i) => parseCidr(t, `${where}[${i}]`)));
  }

  get size(): number {
    return this.blocks.length;
  }

  /** Whether the address (any text; not an IP → false) is in one of the blocks. */
  contains(address: string): boolean {
    if (this.blocks.length === 0) return false;
    const ip = parseIp(address);
    if (ip === undefined) return false;
    for (const c of this.blocks) if (cidrContains(c, ip)) return true;
    return false;
  }
}
